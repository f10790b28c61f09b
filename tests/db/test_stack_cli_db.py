"""`meshvisor destroy` names its stack as the contract says, by its file (`-f FILE`, the stack `plan -f` and
`apply -f` made from it) or by name (`--stack`); with neither, or a file that is not there, it stops before
anything is sent (exit 1, one line)."""

from __future__ import annotations

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
