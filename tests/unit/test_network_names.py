from __future__ import annotations

import pytest

from meshvisor.core.errors import InvalidInput
from meshvisor.core.names import LINK_NAME_MAX, new_id
from meshvisor.network import bridge_name, tap_name, veth_name, vxlan_name
from meshvisor.network.names import link_prefix

PREFIXES = ["m", "mv", "abc", "t1234", "abcdef", "z9z9z9"]
NAMERS = [bridge_name, vxlan_name, veth_name, tap_name]


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize("namer", NAMERS)
def test_link_names_fit_the_kernel_limit_for_every_valid_prefix(prefix: str, namer: object) -> None:
    object_id = new_id()
    name = namer(prefix, object_id)  # type: ignore[operator]
    assert 6 + len(prefix) <= len(name) <= LINK_NAME_MAX
    assert name.startswith(link_prefix(prefix))
    assert object_id.startswith(name.rsplit("-", 1)[1])  # at least 6 digits of the id, in order


@pytest.mark.parametrize("prefix", PREFIXES)
def test_link_names_are_stable_and_kinds_never_collide(prefix: str) -> None:
    object_id = new_id()
    names = [namer(prefix, object_id) for namer in NAMERS]
    assert names == [namer(prefix, object_id) for namer in NAMERS]
    assert len(set(names)) == len(NAMERS)
    assert [n.split("-")[1] for n in names] == ["b", "x", "v", "t"]


def test_link_names_of_other_objects_and_prefixes_differ() -> None:
    a, b = new_id(), new_id()
    assert bridge_name("mv", a) != bridge_name("mv", b)
    assert bridge_name("mv", a) != bridge_name("mv2", a)
    # One prefix's names never start with another prefix's `<prefix>-`, so list_links never mixes them.
    assert not bridge_name("mv12", a).startswith(link_prefix("mv1"))
    assert bridge_name("mv", "0123456789abcdef") == "mv-b-0123456789"


@pytest.mark.parametrize("bad_id", ["", "12345", "ABCDEF12", "xyz12345", "0123-4567", "a" * 65])
def test_ids_must_be_lowercase_hex_of_six_digits_or_more(bad_id: str) -> None:
    with pytest.raises(InvalidInput):
        bridge_name("mv", bad_id)


@pytest.mark.parametrize("bad_prefix", ["", "MV", "toolong7", "m-v", "1mv"])
def test_bad_prefixes_are_refused(bad_prefix: str) -> None:
    with pytest.raises(InvalidInput):
        veth_name(bad_prefix, new_id())
