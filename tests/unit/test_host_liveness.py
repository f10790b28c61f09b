"""How long silence means offline, and how an instance of an offline host is shown (the pure part of the rule)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from meshvisor.platform.hosts import liveness
from meshvisor.platform.settings import Settings

SEEN = datetime(2026, 12, 4, 20, 0, 0, tzinfo=UTC)


def test_the_window_is_three_passes_at_least_30_s_unless_set() -> None:
    assert liveness.offline_after_s(Settings(reconcile_interval_s=1)) == 30
    assert liveness.offline_after_s(Settings(reconcile_interval_s=20)) == 60
    assert liveness.offline_after_s(Settings(reconcile_interval_s=20, host_offline_after_s=4)) == 4


@pytest.mark.parametrize("bad", [0, -1, "soon"])
def test_a_window_that_is_no_duration_is_refused(bad: object) -> None:
    with pytest.raises(ValidationError, match="host_offline_after_s"):
        Settings(host_offline_after_s=bad)


def test_an_instance_of_an_offline_host_is_unknown_beside_its_last_known_state() -> None:
    assert liveness.shown_state("b", "running", {"b": SEEN}) == {
        "state": "unknown",
        "last_known_state": "running",
        "state_reason": "host 'b' is offline (last seen 2026-12-04 20:00:00 UTC)",
    }
    assert liveness.shown_state("a", "stopped", {"b": SEEN}) == {
        "state": "stopped",
        "last_known_state": "stopped",
        "state_reason": None,
    }
