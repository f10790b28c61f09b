"""The OpenAPI document says exactly what the server takes (issue 20): Schemathesis, run as a client author
would, generates requests from the document for every route, some that fit it and some that do not, and sends
them to the API on the fake drivers (operations accepted, not run). It must find no server error, no answer
outside the document (status, content type, body, headers, `Allow`), no request that breaks the document
taken, and no request that fits it refused as malformed (`contract.fuzz_checks`, with the few rules no schema can
state). Most requests name `fz`, which is there for every kind of resource, so they reach past the lookup.

Left out: the event stream (it answers until the client leaves), an operation's wait (it waits its whole timeout
for an operation no worker runs here), `/metrics` (Prometheus's text) and the dashboard's files.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from meshvisor.platform.runtime import Runtime

from .conftest import API_TOKEN, add_ready_image, served

TESTS = Path(__file__).resolve().parents[1]
EXAMPLES = int(os.environ.get("MESHVISOR_FUZZ_EXAMPLES", "25"))
SEED = os.environ.get("MESHVISOR_FUZZ_SEED", "20")  # fixed: a run finds what the last one did
NOT_FUZZED = r"^/v1/events$|/wait$|^/metrics$|/terminal$|^/ui"
CHECKS_LEFT_OUT = (
    "positive_data_acceptance",  # `contract.fuzz_checks` in its place
    "object_level_authorization",  # needs two users' resources named to it: test_access_db.py covers it
)
# A request that breaks the document is refused with a 4xx: 412 too, for a precondition (If-Match) is weighed
# before the request's content is (RFC 9110, 13.2.2).
CONFIG = """
[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "412", "415", "422", "428", "429"]

[dictionaries.there]
values = ["fz"]

[parameters]
"path.name" = { dictionary = "there", probability = 0.7 }
"""
THERE = [  # one of each kind, named fz
    ("/v1/networks", {"name": "fz", "cidr": "10.251.0.0/24"}),
    ("/v1/volumes", {"name": "fz", "size_mb": 8}),
    ("/v1/security-groups", {"name": "fz"}),
    ("/v1/services", {"name": "fz"}),
    ("/v1/gateway/routes", {"name": "fz", "service": "fz"}),
    ("/v1/instances", {"name": "fz", "image": "busybox"}),
    ("/v1/projects", {"name": "fz"}),
]


def fuzz(url: str, config: Path) -> subprocess.CompletedProcess[str]:
    """Schemathesis's command, run where `config` is (it keeps a cache beside it)."""
    argv = [
        str(Path(sys.executable).with_name("st")), "--config-file", str(config), "run", f"{url}/openapi.json",
        "-H", f"Authorization: Bearer {API_TOKEN}",
        "--checks", "all", "--exclude-checks", ",".join(CHECKS_LEFT_OUT),
        "--phases", "examples,coverage,fuzzing",
        "--max-examples", str(EXAMPLES), "--seed", SEED, "--workers", "1",
        "--exclude-path-regex", NOT_FUZZED,
        "--max-failures", "1000", "--continue-on-failure",
        "--generation-database", "none", "--no-color", "--request-timeout", "60",
    ]  # fmt: skip
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "contract.fuzz_checks", "PYTHONPATH": str(TESTS)}
    return subprocess.run(
        argv, capture_output=True, text=True, env=env, timeout=1800, check=False, cwd=config.parent
    )


@pytest.mark.timeout(1200)  # some 60 s alone here; room for a busy machine
def test_the_fuzzer_finds_no_mismatch_between_the_document_and_the_server(
    runtime: Runtime, tmp_path: Path
) -> None:
    add_ready_image(runtime)
    add_ready_image(runtime, "fz")
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    alive = runtime.settings.model_copy(update={"host_offline_after_s": 24 * 3600.0})  # no agent beats here
    with served(alive) as url:
        headers = {"Authorization": f"Bearer {API_TOKEN}"}
        for path, body in THERE:
            made = httpx.post(f"{url}{path}", json=body, headers=headers, timeout=60)
            assert made.status_code in (201, 202), (path, made.text)
        run = fuzz(url, config)
    summary = run.stdout[run.stdout.rfind("SUMMARY") :]
    assert "Tested:" in summary and "generated" in summary, run.stdout[-3000:] + run.stderr[-3000:]
    assert run.returncode == 0, run.stdout[-30000:]
