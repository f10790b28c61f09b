from __future__ import annotations

import pytest

from meshvisor.hypervisor import connection


def test_a_setting_forces_the_domain_type(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connection, "kvm_usable", lambda: False)
    assert connection.choose_domain_type("kvm") == "kvm"
    assert connection.choose_domain_type("qemu") == "qemu"


@pytest.mark.parametrize(("usable", "expected"), [(True, "kvm"), (False, "qemu")])
def test_auto_takes_kvm_only_where_it_can_run_guests(
    monkeypatch: pytest.MonkeyPatch, usable: bool, expected: str
) -> None:
    monkeypatch.setattr(connection, "kvm_usable", lambda: usable)
    assert connection.choose_domain_type("auto") == expected


def test_this_host_without_vmx_or_svm_is_not_kvm_capable() -> None:
    flags = open("/proc/cpuinfo").read()
    if " vmx" in flags or " svm" in flags:
        pytest.skip("this host offers hardware virtualisation")
    assert connection.kvm_usable() is False
