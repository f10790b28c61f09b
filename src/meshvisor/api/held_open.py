"""What one token holds open at once (event streams, terminals): a count per token, so one client cannot take
every connection the server has. In this API process only: each process counts its own."""

from __future__ import annotations

import threading
from collections import Counter


class TooMany(Exception):
    """The token already holds its limit open."""


class HeldOpen:
    def __init__(self, what: str, limit: int) -> None:
        self.what, self.limit = what, limit
        self._held: Counter[str] = Counter()
        self._lock = threading.Lock()

    def take(self, token_id: str) -> None:
        """One more held by `token_id` (give it back with `give_back`), or TooMany when it holds `limit`."""
        with self._lock:
            if self._held[token_id] >= self.limit:
                raise TooMany(f"this token already holds {self.limit} {self.what} open; close one first")
            self._held[token_id] += 1

    def give_back(self, token_id: str) -> None:
        with self._lock:
            self._held[token_id] -= 1
            if self._held[token_id] <= 0:
                del self._held[token_id]

    def held(self, token_id: str) -> int:
        with self._lock:
            return self._held[token_id]
