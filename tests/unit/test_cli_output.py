"""The CLI's shared output: table cells from the API's values, `name=value` pairs, json and yaml as answered."""

from __future__ import annotations

import json

import pytest
import yaml

from meshvisor.cli.access import parse_quotas
from meshvisor.cli.output import Output, cell, show


def test_cells_show_nested_values_compactly() -> None:
    assert cell(None) == "" and cell(2.0) == "2" and cell(0.5) == "0.5"
    assert cell({"instances": 2, "vcpus": 1.0}) == "instances=2, vcpus=1"
    assert cell(["vcpus", "memory_mb"]) == "vcpus, memory_mb"


def test_quotas_are_whole_numbers_by_name() -> None:
    assert parse_quotas(["instances=2", "vcpus=8"]) == {"instances": 2, "vcpus": 8}
    for bad, reason in (("instances", "takes name=value"), ("=2", "takes name=value"), ("vcpus=-1", "whole")):
        with pytest.raises(ValueError, match=reason):
            parse_quotas([bad])


def test_json_and_yaml_print_the_answer_as_it_is(capsys: pytest.CaptureFixture[str]) -> None:
    answer = [{"name": "team", "quotas": {"instances": 2}, "over_quota": []}]
    show(answer, Output.json, ("name",))
    assert json.loads(capsys.readouterr().out) == answer
    show(answer, Output.yaml, ("name",))
    assert yaml.safe_load(capsys.readouterr().out) == answer
