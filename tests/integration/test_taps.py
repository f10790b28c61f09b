"""A VM's tap made by the platform (for a hypervisor that cannot make taps) over real netlink, in a namespace of
the test's own: named for its attachment, owned by the hypervisor's user, on the network's bridge, up; made again
when it is not right; removed with its attachment."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from pyroute2 import IPRoute

from meshvisor.core.errors import InvalidInput, NotFound
from meshvisor.core.names import new_id
from meshvisor.network import bridge_name, ensure_tap, list_links, remove_tap, tap_name
from meshvisor.network.netlink import find_link, link_data, rtnl

from .netns_tools import namespaces

pytestmark = pytest.mark.integration
OWNER = 4242  # a user id no process here runs as: only the owner is checked


@pytest.fixture
def host() -> Iterator[tuple[str, str, str]]:
    """(prefix, namespace, network id), the network's bridge made in the namespace."""
    prefix = "p" + secrets.token_hex(2)
    network_id = new_id()
    with namespaces(f"{prefix}-host") as (ns,), rtnl(ns) as ipr:
        ipr.link("add", ifname=bridge_name(prefix, network_id), kind="bridge", mtu=1450)
        yield prefix, ns, network_id


def test_a_tap_is_made_on_the_bridge_owned_by_the_user_and_is_idempotent(host: tuple[str, str, str]) -> None:
    prefix, ns, network_id = host
    attachment = new_id()
    name = ensure_tap(prefix, network_id, attachment, OWNER, ns)
    assert name == tap_name(prefix, attachment) and name.startswith(f"{prefix}-t-")
    with rtnl(ns) as ipr:
        tap, bridge = find_link(ipr, name), find_link(ipr, bridge_name(prefix, network_id))
        assert link_data(tap)["IFLA_TUN_OWNER"] == OWNER and link_data(tap)["IFLA_TUN_PERSIST"] == 1
        assert tap.get("master") == bridge["index"] and tap.get("mtu") == 1450
    assert [link.up for link in list_links(prefix, ns) if link.name == name] == [True]
    with IPRoute() as root:
        assert not root.link_lookup(ifname=name)  # in the host's namespace only
    assert ensure_tap(prefix, network_id, attachment, OWNER, ns) == name
    with rtnl(ns) as ipr:
        assert find_link(ipr, name)["index"] == tap["index"]  # left as it was


def test_a_tap_of_another_owner_is_made_again_and_removal_is_idempotent(host: tuple[str, str, str]) -> None:
    prefix, ns, network_id = host
    attachment = new_id()
    name = ensure_tap(prefix, network_id, attachment, OWNER, ns)
    ensure_tap(prefix, network_id, attachment, OWNER + 1, ns)
    with rtnl(ns) as ipr:
        assert link_data(find_link(ipr, name))["IFLA_TUN_OWNER"] == OWNER + 1
    assert remove_tap(prefix, attachment, ns) is True
    assert remove_tap(prefix, attachment, ns) is False
    assert [link.name for link in list_links(prefix, ns)] == [bridge_name(prefix, network_id)]


def test_bad_requests_change_nothing(host: tuple[str, str, str]) -> None:
    prefix, ns, network_id = host
    with pytest.raises(NotFound, match="bridge"):
        ensure_tap(prefix, new_id(), new_id(), OWNER, ns)
    with pytest.raises(InvalidInput):
        ensure_tap(prefix, network_id, new_id(), -1, ns)
    with pytest.raises(InvalidInput):
        ensure_tap(prefix, network_id, "not-an-id", OWNER, ns)
    assert [link.name for link in list_links(prefix, ns)] == [bridge_name(prefix, network_id)]
