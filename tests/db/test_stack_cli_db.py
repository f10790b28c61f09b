"""`meshvisor destroy` names its stack as the contract says, by its file (`-f FILE`, the stack `plan -f` and
`apply -f` made from it) or by name (`--stack`); with neither, or a file that is not there, it stops before
anything is sent (exit 1, one line)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .test_access_cli_db import cli  # noqa: F401  (the fixture)

EMPTY = "networks: {}\n"


def test_destroy_f_goes_to_the_files_stack(cli: Any, tmp_path: Path) -> None:  # noqa: F811
    path = tmp_path / "quiet.yaml"
    path.write_text(EMPTY)
    planned = cli("plan", "-f", str(path))
    assert planned.exit_code == 0, (planned.stdout, planned.stderr)
    gone = cli("destroy", "-f", str(path), "--yes")
    assert gone.exit_code == 0 and "No changes" in gone.stdout, (gone.stdout, gone.stderr)
    other = tmp_path / "never-planned.yaml"
    other.write_text(EMPTY)
    missing = cli("destroy", "-f", str(other), "--yes")  # the file's name is the stack's: never made
    assert missing.exit_code == 1 and "never-planned" in missing.stderr, (missing.stdout, missing.stderr)
    named = cli("destroy", "-f", str(other), "--stack", "quiet", "--yes")  # --stack wins, as for plan and apply
    assert named.exit_code == 0, (named.stdout, named.stderr)


def test_destroy_without_a_stack_or_with_a_missing_file_stops_before_asking(cli: Any, tmp_path: Path) -> None:  # noqa: F811
    neither = cli("destroy", "--yes")
    assert neither.exit_code == 1 and "-f FILE" in neither.stderr and "--stack NAME" in neither.stderr
    nowhere = cli("destroy", "-f", str(tmp_path / "nowhere.yaml"), "--yes")
    assert nowhere.exit_code == 1 and "nowhere.yaml: no such stack file" in nowhere.stderr, nowhere.stderr
    assert "Traceback" not in neither.stderr + nowhere.stderr


def test_the_stacks_records_are_listed_shown_and_forgotten(cli: Any, tmp_path: Path) -> None:  # noqa: F811
    path = tmp_path / "kept.yaml"
    path.write_text(EMPTY)
    assert cli("plan", "-f", str(path)).exit_code == 0  # a plan makes the stack's record
    listed = cli("stacks", "list", "-o", "json")
    assert listed.exit_code == 0 and [s["name"] for s in json.loads(listed.stdout)] == ["kept"], listed.stdout
    shown = cli("stacks", "show", "kept", "-o", "json")
    assert shown.exit_code == 0 and json.loads(shown.stdout)["resources"] == [], shown.stdout
    gone = cli("stacks", "delete", "kept", "--yes", "-o", "json")
    assert gone.exit_code == 0 and json.loads(gone.stdout)["deleted"] == "kept", (gone.stdout, gone.stderr)
    missing = cli("stacks", "show", "kept")
    assert missing.exit_code == 1 and "not found" in missing.stderr and "Traceback" not in missing.stderr
