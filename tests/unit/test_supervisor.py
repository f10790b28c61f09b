"""`meshvisor up`'s supervisor over real (tiny) child processes: restart with back-off, give up on a tight loop,
stop cleanly; time is passed in, so nothing here waits out a back-off."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from meshvisor.cli.supervisor import Children, GaveUp, RestartPolicy, exit_text

EXIT_WITH = (sys.executable, "-c", "import sys, time; time.sleep(float(sys.argv[2])); sys.exit(int(sys.argv[1]))")


def test_the_delay_doubles_while_a_child_keeps_dying_and_gives_up_after_a_burst() -> None:
    policy = RestartPolicy()
    assert [policy.next_delay(t) for t in (0, 1, 3, 7)] == [1, 2, 4, 8]
    assert policy.next_delay(15) is None


def test_a_child_that_ran_a_while_starts_again_after_the_first_delay() -> None:
    policy = RestartPolicy()
    assert [policy.next_delay(t) for t in (0, 1, 3)] == [1, 2, 4]
    assert policy.next_delay(200) == 1
    assert RestartPolicy(max_delay_s=3).next_delay(0) == 1


def test_exit_text_names_the_signal() -> None:
    assert exit_text(1) == "exit 1"
    assert exit_text(-9) == "killed by SIGKILL"


def test_a_dead_child_is_started_again_after_its_delay(tmp_path: Path) -> None:
    said: list[str] = []
    children = Children(say=said.append, program=EXIT_WITH)
    first = children.spawn("worker", tmp_path / "worker.log", "3", "0")
    first.wait(timeout=30)
    children.watch_once(100.0)
    assert said == [f"worker (pid {first.pid}) ended (exit 3); starting it again in 1 s"]
    children.watch_once(100.5)
    assert children.children[0].proc is first  # still waiting out its back-off
    children.watch_once(101.0)
    second = children.children[0].proc
    assert second is not first and said[-1] == f"worker started again: pid {second.pid}"
    second.wait(timeout=30)
    children.stop()


def test_a_child_dying_in_a_tight_loop_is_given_up_with_its_log(tmp_path: Path) -> None:
    children = Children(say=lambda _: None, program=EXIT_WITH)
    children.spawn("xds", tmp_path / "xds.log", "1", "0")
    with pytest.raises(GaveUp, match=r"xds ended 5 times within 60 s \(last: exit 1\).*xds\.log"):
        for now in range(0, 100, 10):  # dies at once each time: 5 exits within 40 s
            children.children[0].proc.wait(timeout=30)
            children.watch_once(now)
            children.watch_once(now + 9)  # every delay (1, 2, 4, 8 s) is over
    children.stop()


def test_stop_ends_every_child_and_none_is_started_after(tmp_path: Path) -> None:
    children = Children(say=lambda _: None, program=EXIT_WITH)
    long = children.spawn("api", tmp_path / "api.log", "0", "600")
    short = children.spawn("worker", tmp_path / "worker.log", "2", "0")
    short.wait(timeout=30)
    children.watch_once(0.0)
    children.stop()
    assert long.poll() is not None
    children.watch_once(10.0)
    assert children.children[1].proc is short


def test_watch_returns_or_raises_what_the_foreground_work_did(tmp_path: Path) -> None:
    children = Children(say=lambda _: None, program=EXIT_WITH)
    children.watch(lambda: None, interval_s=0.01)

    def fails() -> None:
        raise ValueError("the foreground failed")

    with pytest.raises(ValueError, match="the foreground failed"):
        children.watch(fails, interval_s=0.01)
