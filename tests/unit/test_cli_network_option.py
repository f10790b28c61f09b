"""`meshvisor instances create --network`: what each form of the option asks the API for."""

from __future__ import annotations

import pytest

from meshvisor.cli.instances import _attachment


@pytest.mark.parametrize(
    ("given", "wanted"),
    [
        ("front", {"network": "front"}),
        ("front=10.0.0.5", {"network": "front", "ip": "10.0.0.5"}),
        ("team-a/mesh", {"network": "mesh", "project": "team-a"}),
        ("team-a/mesh=10.0.0.6", {"network": "mesh", "project": "team-a", "ip": "10.0.0.6"}),
    ],
)
def test_each_form_of_the_network_option(given: str, wanted: dict[str, str]) -> None:
    assert _attachment(given) == wanted
