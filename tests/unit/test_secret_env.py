"""The sealing of secret environment values: one 0600 key per data directory, made on the first seal only;
values come back in clear with that key and with no other; what is shown is redacted."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

import pytest

from meshvisor.core.errors import PermanentError
from meshvisor.platform.state.secret_env import KEY_FILE, REDACTED, EnvSeal, shown


def test_values_are_sealed_with_a_private_key_made_once_and_opened_with_it(tmp_path: Path) -> None:
    sealed = EnvSeal(tmp_path).seal({"TOKEN": "s3cr3t", "EMPTY": ""})
    assert set(sealed) == {"TOKEN", "EMPTY"} and "s3cr3t" not in repr(sealed)
    key = tmp_path / KEY_FILE
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and len(key.read_bytes()) == 32
    again = EnvSeal(tmp_path).seal({"TOKEN": "s3cr3t"})
    assert again["TOKEN"] != sealed["TOKEN"]  # a fresh IV each time: equal values do not show as equal
    assert EnvSeal(tmp_path).open(sealed) == {"TOKEN": "s3cr3t", "EMPTY": ""}
    assert key.read_bytes() == (tmp_path / KEY_FILE).read_bytes()


def test_concurrent_first_seals_share_one_key(tmp_path: Path) -> None:
    tokens: list[str] = []
    threads = [
        threading.Thread(target=lambda: tokens.append(EnvSeal(tmp_path).seal({"A": "x"})["A"])) for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(EnvSeal(tmp_path).open({"A": token}) == {"A": "x"} for token in tokens)


def test_a_host_without_the_key_or_with_another_cannot_open(tmp_path: Path) -> None:
    sealed = EnvSeal(tmp_path / "a").seal({"TOKEN": "s3cr3t"})
    with pytest.raises(PermanentError, match="has no env.key"):
        EnvSeal(tmp_path / "b").open(sealed)
    assert not (tmp_path / "b" / KEY_FILE).exists()  # opening never makes a key
    EnvSeal(tmp_path / "c").seal({})
    with pytest.raises(PermanentError, match="another env.key"):
        EnvSeal(tmp_path / "c").open(sealed)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / KEY_FILE).write_bytes(b"short")
    with pytest.raises(PermanentError, match="must hold 32 bytes"):
        EnvSeal(tmp_path / "d").open(sealed)


def test_what_is_shown_has_every_name_and_no_secret_value() -> None:
    assert shown({"PLAIN": "1"}, {"TOKEN": "gAAAA..."}) == {"PLAIN": "1", "TOKEN": REDACTED}
    assert shown({"PLAIN": "1"}, None) == {"PLAIN": "1"}


def test_an_agent_keeps_the_key_the_api_gives_it_and_opens_what_the_api_sealed(tmp_path: Path) -> None:
    api_side, agent_side = EnvSeal(tmp_path / "api"), EnvSeal(tmp_path / "agent")
    sealed = api_side.seal({"TOKEN": "s3cr3t"})
    agent_side.keep(api_side.key_text())
    assert stat.S_IMODE(agent_side.path.stat().st_mode) == 0o600
    assert agent_side.open(sealed) == {"TOKEN": "s3cr3t"}
    with pytest.raises(ValueError, match="32 bytes"):
        agent_side.keep("c2hvcnQ=")
    assert agent_side.open(sealed) == {"TOKEN": "s3cr3t"}  # a bad key given changes nothing
