"""A host's security filter is applied again only when what it should hold changed, whichever process asks:
what one call does depends on the host and the database, never on which process applied last (a worker that
starts after another applied the filter does not apply it again)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from meshvisor import network
from meshvisor.platform.networks.security_steps import sync_security
from meshvisor.platform.runtime import Runtime


@pytest.fixture
def removals(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    shutil.rmtree(runtime.settings.run_path, ignore_errors=True)  # what earlier tests of this prefix recorded
    calls: list[str] = []
    monkeypatch.setattr(network, "remove_security_groups", lambda prefix, netns=None: calls.append(prefix))
    yield calls
    shutil.rmtree(runtime.settings.run_path, ignore_errors=True)


def test_a_filter_applied_by_one_process_is_not_applied_again_by_another(
    runtime: Runtime, removals: list[str]
) -> None:
    sync_security(runtime)
    assert removals == [runtime.settings.host_prefix]  # nothing known applied yet: no member ports, no filter
    another_process = Runtime(runtime.settings)
    try:
        sync_security(another_process)
        sync_security(runtime)
        assert len(removals) == 1, "the same filter was applied again"
        sync_security(another_process, force=True)  # the periodic pass puts a table changed behind our back right
        assert len(removals) == 2
    finally:
        another_process.close()


def test_a_filter_whose_record_is_gone_is_applied_again(runtime: Runtime, removals: list[str]) -> None:
    sync_security(runtime)
    (runtime.settings.run_path / "security-filter.applied").unlink()  # as after a reboot, or a kill mid-apply
    sync_security(runtime)
    assert len(removals) == 2
