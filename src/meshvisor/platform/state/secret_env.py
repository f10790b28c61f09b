"""Secret environment values: sealed before they are stored, opened only where the workload is made.

An instance's `secret_env` column maps each secret name to a Fernet token (AES-128-CBC + HMAC-SHA256), keyed by
`<data dir>/env.key` (32 random bytes, 0600, made once by the first process that seals; `meshvisor backup`
keeps it). An agent with its own data directory gets it where it gets its host certificate and the CA's trust
bundle: in the API's answer to `POST /v1/hosts/{name}/certificate` (platform admins only), kept 0600. Its own
file, not a sub-key of `stack.key`: a host that makes workloads needs this key, and nothing that unseals saved
stack plans. Everything that shows an instance shows a secret's name with `REDACTED` as its value (`shown`);
the compute spec gets the clear values (`EnvSeal.open`).
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Mapping
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from meshvisor.core.errors import PermanentError
from meshvisor.core.files import create_private, write_private

KEY_FILE = "env.key"
KEY_BYTES = 32
REDACTED = "(secret)"  # what every answer, event, plan and page shows for a secret value


class EnvSeal:
    """Seals and opens secret environment values with the key in `<data_dir>/env.key`, read when first needed:
    a request refused before it seals anything makes no key."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / KEY_FILE
        self._fernet: Fernet | None = None

    def _key(self, make: bool) -> Fernet:
        if self._fernet is None:
            if not self.path.exists():
                if not make:
                    raise PermanentError(
                        f"this host has no {KEY_FILE}: it cannot open the instance's secret values"
                    )
                self.path.parent.mkdir(parents=True, exist_ok=True)
                create_private(self.path, secrets.token_bytes(KEY_BYTES))  # concurrent makers: one key wins
            key = self.path.read_bytes()
            if len(key) != KEY_BYTES:
                raise PermanentError(f"{self.path} must hold {KEY_BYTES} bytes, not {len(key)}")
            self._fernet = Fernet(base64.urlsafe_b64encode(key))
        return self._fernet

    def key_text(self) -> str:
        """The key as text (made when absent), for an agent: `POST /v1/hosts/{name}/certificate` answers it."""
        self._key(make=True)
        return base64.urlsafe_b64encode(self.path.read_bytes()).decode()

    def keep(self, text: str) -> None:
        """An agent keeps the key the API gave it (`key_text`), 0600, replacing one that differs."""
        key = base64.urlsafe_b64decode(text.encode())
        if len(key) != KEY_BYTES:
            raise ValueError(f"an env key has {KEY_BYTES} bytes, not {len(key)}")
        if not self.path.exists() or self.path.read_bytes() != key:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_private(self.path, key)
        self._fernet = None

    def seal(self, values: Mapping[str, str]) -> dict[str, str]:
        """Each value sealed (the key is made, 0600, when this data directory has none yet)."""
        fernet = self._key(make=True)
        return {name: fernet.encrypt(value.encode()).decode() for name, value in values.items()}

    def open(self, sealed: Mapping[str, str]) -> dict[str, str]:
        """Each value in clear; PermanentError when this host has no key or another one."""
        fernet = self._key(make=False)
        try:
            return {name: fernet.decrypt(token.encode()).decode() for name, token in sealed.items()}
        except InvalidToken:
            raise PermanentError(f"secret values sealed with another {KEY_FILE} than this host's") from None


def shown(env: Mapping[str, str], secret_env: Mapping[str, str] | None) -> dict[str, str]:
    """The environment as everything outside the workload sees it: every name, secret values redacted."""
    return {**env, **dict.fromkeys(secret_env or {}, REDACTED)}


__all__ = ["KEY_FILE", "REDACTED", "EnvSeal", "shown"]
