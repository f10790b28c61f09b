"""The scheduler (`platform.hosts.scheduler`): examples of each rule, and the sampled fast path against a
brute-force reference on random hosts and requests (it never places beyond capacity, honours every constraint,
and refuses only when no host could take the instance)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshvisor.core.errors import Conflict, InvalidInput, NotFound
from meshvisor.platform.hosts.scheduler import Ask, HostInfo, Overcommit, Resources, Scheduler, choose

BIG = Resources(8, 16384, 100 * 1024)
CONTAINER = Ask("container", Resources(1, 1024, 0))


def test_spread_goes_to_the_least_loaded_host_by_its_dominant_resource() -> None:
    hosts = [
        HostInfo("a", BIG, used=Resources(1, 8192, 0)),  # memory half used
        HostInfo("b", BIG, used=Resources(4, 1024, 0)),  # vCPUs 4 of 8 * 16: less loaded
    ]
    placed = choose(hosts, CONTAINER)
    assert placed.host == "b"
    assert placed.reason.startswith("spread: least loaded of 2 host(s)")
    assert 0 < placed.score < 0.6


def test_placements_spread_over_equal_hosts_and_anti_affinity_keeps_members_apart() -> None:
    sched = Scheduler([HostInfo("a", BIG), HostInfo("b", BIG), HostInfo("c", BIG)])
    assert [sched.place(CONTAINER).host for _ in range(3)] == ["a", "b", "c"]
    web = Ask("container", Resources(0.5, 128, 0), anti_affinity="web")
    assert sorted(sched.place(web).host for _ in range(3)) == ["a", "b", "c"]
    with pytest.raises(Conflict, match="already holds a member of anti-affinity group 'web'"):
        sched.place(web)


def test_affinity_members_follow_the_first_one() -> None:
    sched = Scheduler([HostInfo("a", BIG), HostInfo("b", BIG)])
    sched.place(CONTAINER)  # a is now the busier one
    db = Ask("container", Resources(1, 1024, 0), affinity="db")
    first = sched.place(db).host
    assert first == "b"
    second = sched.place(db)
    assert second.host == "b" and "affinity: group 'db' lives here" in second.reason


def test_nothing_fits_names_what_is_short_on_each_host() -> None:
    hosts = [
        HostInfo("a", BIG, online=False),
        HostInfo("b", Resources(2, 1024, 0), used=Resources(0, 512, 0)),
        HostInfo("c", BIG, kinds=frozenset({"container"})),
    ]
    ask = Ask("vm", Resources(1, 1024, 0))
    with pytest.raises(Conflict) as refused:
        choose(hosts, ask, Overcommit(memory=1.0))
    assert str(refused.value) == (
        "no host can take this vm (1 vCPUs, 1024 MiB memory, 0 MiB disk): a: offline;"
        " b: memory 512 MiB free < 1024 MiB asked; c: cannot run VMs"
    )


@pytest.mark.parametrize(
    ("ask", "error", "message"),
    [
        (Ask("container", Resources(1, 1), host="nowhere"), NotFound, "host 'nowhere' not found"),
        (Ask("vm", Resources(1, 1), host="c"), InvalidInput, "host 'c' cannot run VMs"),
        (Ask("vm", Resources(1, 1), host_labels={"zone": "c"}), InvalidInput, "no host that can run it has the"),
        (Ask("container", Resources(1, 1), host="a", host_labels={"ssd": "true"}), InvalidInput, "lacks the"),
        (Ask("container", Resources(1, 1 << 30)), Conflict, "memory"),
        (Ask("container", Resources(1, 1), host="b"), Conflict, "b: offline"),
    ],
)
def test_bad_input_and_conflicts(ask: Ask, error: type[Exception], message: str) -> None:
    hosts = [
        HostInfo("a", BIG, labels={"zone": "a"}),
        HostInfo("b", BIG, online=False),
        HostInfo("c", BIG, kinds=frozenset({"container"}), labels={"zone": "c"}),
    ]
    with pytest.raises(error, match=message):
        choose(hosts, ask)


def test_a_host_that_takes_only_named_instances_is_left_alone_unless_named() -> None:
    hosts = [HostInfo("a", BIG, schedulable=False)]
    with pytest.raises(Conflict, match="a: takes only instances that name it"):
        choose(hosts, CONTAINER)
    assert choose(hosts, Ask("container", CONTAINER.need, host="a")).host == "a"


def test_a_cordoned_host_takes_nothing_new_named_or_not() -> None:
    hosts = [HostInfo("a", BIG), HostInfo("b", BIG, cordoned=True)]
    sched = Scheduler(hosts)
    assert {sched.place(CONTAINER).host for _ in range(4)} == {"a"}  # b is emptier, and left alone
    with pytest.raises(Conflict, match="^no host can take this container .*: b: cordoned$"):
        choose(hosts, Ask("container", CONTAINER.need, host="b"))
    with pytest.raises(Conflict, match="a: .*; b: cordoned"):
        choose(hosts, Ask("container", Resources(1, 1 << 30)))


# The brute-force reference ------------------------------------------------------------------------------------

OVER = Overcommit(cpu=2.0, memory=1.0, disk=1.5)


@dataclass
class Ref:
    """Every host's free room and groups, kept by hand beside the scheduler's."""

    hosts: list[HostInfo]
    free: dict[str, list[float]] = field(default_factory=dict)
    anti: dict[str, set[str]] = field(default_factory=dict)
    homes: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for h in self.hosts:
            c, u = h.capacity, h.used
            ratios = (OVER.cpu, OVER.memory, OVER.disk)
            self.free[h.name] = [
                size * ratio - used
                for size, ratio, used in zip(
                    (c.vcpus, c.memory_mb, c.disk_mb), ratios, (u.vcpus, u.memory_mb, u.disk_mb), strict=True
                )
            ]
            self.anti[h.name] = set(h.anti_affinity)

    def feasible(self, ask: Ask) -> set[str]:
        need = (ask.need.vcpus, ask.need.memory_mb, ask.need.disk_mb)
        return {
            h.name
            for h in self.hosts
            if h.online
            and not h.cordoned
            and (h.schedulable or ask.host == h.name)
            and (ask.host is None or ask.host == h.name)
            and ask.kind in h.kinds
            and all(h.labels.get(k) == v for k, v in ask.host_labels.items())
            and ask.anti_affinity not in self.anti[h.name]
            and (ask.affinity not in self.homes or self.homes[ask.affinity] == h.name)
            and all(f >= n for f, n in zip(self.free[h.name], need, strict=True))
        }

    def load_after(self, name: str, ask: Ask) -> float:
        host = next(h for h in self.hosts if h.name == name)
        c, f = host.capacity, self.free[name]
        need = (ask.need.vcpus, ask.need.memory_mb, ask.need.disk_mb)
        eff = (c.vcpus * OVER.cpu, c.memory_mb * OVER.memory, c.disk_mb * OVER.disk)
        return max(1 - (fr - n) / e if e > 0 else 0.0 for fr, n, e in zip(f, need, eff, strict=True))

    def commit(self, name: str, ask: Ask) -> None:
        for i, n in enumerate((ask.need.vcpus, ask.need.memory_mb, ask.need.disk_mb)):
            self.free[name][i] -= n
            assert self.free[name][i] >= -1e-9, f"{name} placed beyond its capacity"
        if ask.anti_affinity:
            self.anti[name].add(ask.anti_affinity)
        if ask.affinity:
            self.homes.setdefault(ask.affinity, name)


NAMES = ["a", "b", "c", "d", "e"]
labels = st.dictionaries(st.sampled_from(["zone", "ssd"]), st.sampled_from(["1", "2"]), max_size=2)
hosts_st = st.lists(
    st.builds(
        HostInfo,
        name=st.sampled_from(NAMES),
        capacity=st.builds(Resources, st.integers(0, 8), st.integers(0, 4096), st.integers(0, 4096)),
        used=st.builds(Resources, st.integers(0, 4), st.integers(0, 2048), st.integers(0, 1024)),
        online=st.booleans(),
        schedulable=st.booleans(),
        cordoned=st.sampled_from([False, False, False, True]),
        kinds=st.sampled_from([frozenset({"container"}), frozenset({"container", "vm"})]),
        labels=labels,
        anti_affinity=st.frozensets(st.sampled_from(["g1", "g2"]), max_size=1),
    ),
    min_size=1,
    max_size=5,
    unique_by=lambda h: h.name,
)
asks_st = st.lists(
    st.builds(
        Ask,
        kind=st.sampled_from(["container", "vm"]),
        need=st.builds(Resources, st.sampled_from([0.5, 1, 2]), st.integers(0, 1024), st.integers(0, 1024)),
        host=st.none() | st.sampled_from(NAMES),
        host_labels=labels,
        affinity=st.none() | st.sampled_from(["x", "y"]),
        anti_affinity=st.none() | st.sampled_from(["g1", "g2"]),
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(hosts=hosts_st, asks=asks_st, limit=st.none() | st.integers(1, 3), seed=st.integers(0, 1000))
def test_the_sampled_path_matches_a_brute_force_reference(
    hosts: list[HostInfo], asks: list[Ask], limit: int | None, seed: int
) -> None:
    sched, ref = Scheduler(hosts, OVER, limit=limit, rng=random.Random(seed)), Ref(hosts)
    for ask in asks:
        feasible = ref.feasible(ask)
        try:
            placed = sched.place(ask)
        except (Conflict, InvalidInput, NotFound):
            assert not feasible, f"refused {ask} though {feasible} could take it"
            continue
        assert placed.host in feasible, f"{ask} placed on {placed.host}, not one of {feasible}"
        if limit is None:  # scoring every host: the least loaded one wins
            assert ref.load_after(placed.host, ask) == pytest.approx(min(ref.load_after(n, ask) for n in feasible))
        ref.commit(placed.host, ask)


def test_a_stack_instance_s_placement_compares_with_what_the_instance_shows() -> None:
    from meshvisor.platform.stacks import normalise, spec

    res = spec.Instance.model_validate(
        {"image": "busybox", "placement": {"anti_affinity": "web", "host_labels": {"zone": "a"}}}
    )
    shown = {  # what `GET /v1/instances/{name}` shows: where it landed and why, beside the constraints
        "image": "busybox",
        "placement": {
            "host": "b",
            "score": 0.1,
            "reason": "spread",
            "anti_affinity": "web",
            "host_labels": {"zone": "a"},
        },
    }
    want = normalise.wanted("instance", res)
    assert normalise.differing("instance", want, normalise.observed("instance", shown, {})) == []
    moved = {**shown, "placement": {"host": "b", "score": 0.1, "reason": "spread"}}  # made without constraints
    assert normalise.differing("instance", want, normalise.observed("instance", moved, {})) == ["placement"]
    plain = normalise.wanted("instance", spec.Instance.model_validate({"image": "busybox"}))
    assert normalise.differing("instance", plain, normalise.observed("instance", moved, {})) == []
