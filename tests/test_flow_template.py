"""Flow-control settings in templates: JSON, Python attributes, validation, the JSON Schema."""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
import pytest

from tukio import Engine, WorkflowTemplate
from tukio.errors import TemplateError
from tukio.schema import load_schema

VALIDATOR = jsonschema.Draft202012Validator(load_schema())
FLOW: dict[str, Any] = {
    "id": "flow-template",
    "concurrency": 3,
    "concurrency_key": "customer",
    "rate": {"limit": 10, "period": 1.5},
    "schedule": {"cron": "0 2 * * *", "timezone": "Europe/Paris", "catch_up": "last", "data": {"x": 1}},
    "tasks": [],
}


def test_json_round_trip_keeps_flow_settings() -> None:
    template = WorkflowTemplate.from_dict(FLOW)
    assert template.concurrency == 3
    assert template.concurrency_key == "customer"
    assert template.rate == {"limit": 10, "period": 1.5}
    assert template.schedule is not None
    assert template.schedule["catch_up"] == "last"
    d = template.as_dict()
    assert {k: d[k] for k in ("concurrency", "concurrency_key", "rate", "schedule")} == {
        k: FLOW[k] for k in ("concurrency", "concurrency_key", "rate", "schedule")
    }
    assert WorkflowTemplate.from_dict(d).as_dict() == d
    assert template.copy().as_dict() == d
    assert VALIDATOR.is_valid(d)
    # A deep copy: changing what from_dict was given changes nothing.
    source = copy.deepcopy(FLOW)
    template = WorkflowTemplate.from_dict(source)
    source["rate"]["limit"] = 99
    assert template.rate == {"limit": 10, "period": 1.5}


def test_templates_without_flow_settings_are_written_as_before() -> None:
    d = WorkflowTemplate.from_dict({"id": "plain", "tasks": []}).as_dict()
    assert list(d) == ["id", "title", "policy", "topics", "timeout", "schema", "tasks", "graph"]
    assert WorkflowTemplate.from_dict({"id": "plain", "concurrency": None, "rate": None}).flow_settings() == {}


def test_python_attributes_override_json_and_are_validated(noop: str) -> None:
    template = WorkflowTemplate.from_dict({"id": "t", "tasks": [{"id": "a", "name": noop}]})
    template.concurrency = 2
    template.rate = {"limit": 1, "period": 60}
    assert template.validate()
    assert template.as_dict()["concurrency"] == 2
    template.concurrency = 0
    with pytest.raises(TemplateError, match="concurrency: must be a positive integer, got 0"):
        template.validate()
    built = WorkflowTemplate(uid="py", concurrency=1, concurrency_key="k", rate={"limit": 2, "period": 1})
    assert built.flow_settings() == {"concurrency": 1, "concurrency_key": "k", "rate": {"limit": 2, "period": 1}}


@pytest.mark.parametrize(
    ("fields", "problems"),
    [
        ({"concurrency": 0}, ["concurrency: must be a positive integer, got 0"]),
        ({"concurrency": -1}, ["concurrency: must be a positive integer, got -1"]),
        ({"concurrency": 2.0}, ["concurrency: must be a positive integer, got 2.0"]),
        ({"concurrency": True}, ["concurrency: must be a positive integer, got True"]),
        ({"concurrency": "3"}, ["concurrency: must be a positive integer, got '3'"]),
        ({"concurrency_key": "k"}, ["concurrency_key: needs 'concurrency'"]),
        ({"concurrency": 1, "concurrency_key": ""}, ["concurrency_key: must be a non-empty string, got ''"]),
        ({"concurrency": 1, "concurrency_key": 3}, ["concurrency_key: must be a non-empty string, got 3"]),
        ({"rate": {"limit": 5}}, ["rate: 'period' is required"]),
        ({"rate": {"period": 5}}, ["rate: 'limit' is required"]),
        ({"rate": {}}, ["rate: 'limit' is required", "rate: 'period' is required"]),
        ({"rate": {"limit": 0, "period": 1}}, ["rate.limit: must be a positive integer, got 0"]),
        ({"rate": {"limit": 1, "period": 0}}, ["rate.period: must be a positive number, got 0"]),
        ({"rate": {"limit": 1, "period": float("nan")}}, ["rate.period: must be a positive number, got nan"]),
        (
            {"rate": {"limit": 1, "period": 1, "burst": 2}},
            ["rate.burst: unknown field (expected one of limit, period)"],
        ),
        ({"rate": 5}, ["rate: must be an object {limit, period}, got int"]),
        (
            {"schedule": {"cron": "61 * * * *"}},
            ["schedule.cron: cannot parse '61 * * * *': minute 61 out of range 0-59"],
        ),
        ({"schedule": {}}, ["schedule: 'cron' is required"]),
        ({"schedule": {"cron": 5}}, ["schedule.cron: must be a string, got int"]),
        (
            {"schedule": {"cron": "@daily", "timezone": "Mars/Olympus"}},
            ["schedule.timezone: unknown time zone 'Mars/Olympus'"],
        ),
        ({"schedule": {"cron": "@daily", "timezone": 1}}, ["schedule.timezone: must be a string, got int"]),
        (
            {"schedule": {"cron": "@daily", "catch_up": "some"}},
            ["schedule.catch_up: must be one of none, last, all, got 'some'"],
        ),
        ({"schedule": {"cron": "@daily", "data": [1]}}, ["schedule.data: must be an object, got list"]),
        ({"schedule": {"cron": "@daily", "every": 1}}, ["schedule.every: unknown field"]),
        ({"schedule": "@daily"}, ["schedule: must be an object {cron, timezone, catch_up, data}, got str"]),
    ],
)
def test_bad_flow_settings_name_each_problem(fields: dict[str, Any], problems: list[str]) -> None:
    d = {"id": "bad", "tasks": [], **fields}
    with pytest.raises(TemplateError) as info:
        WorkflowTemplate.from_dict(d)
    assert len(info.value.problems) == len(problems)
    for found, expected in zip(info.value.problems, problems, strict=True):
        assert found.startswith(expected), found
    assert isinstance(info.value, ValueError)


def test_an_integer_too_long_to_write_is_described() -> None:
    assert WorkflowTemplate.from_dict({"concurrency": 10**5000}).concurrency == 10**5000
    with pytest.raises(TemplateError, match=r"rate\.period: must be a positive number, got an integer too long"):
        WorkflowTemplate.from_dict({"rate": {"limit": 1, "period": 10**5000}})


def test_every_problem_is_listed_at_once() -> None:
    with pytest.raises(TemplateError) as info:
        WorkflowTemplate.from_dict({"concurrency": 0, "rate": {"limit": 1}, "schedule": {"cron": "* *"}, "timeout": -1})
    where = sorted(p.split(":")[0] for p in info.value.problems)
    assert where == ["concurrency", "rate", "schedule.cron", "timeout"]


def test_the_schema_refuses_what_the_loader_refuses() -> None:
    for bad in (
        {"concurrency": 0},
        {"concurrency_key": "k"},
        {"rate": {"limit": 1}},
        {"rate": {"limit": 1, "period": 0}},
        {"schedule": {}},
        {"schedule": {"cron": "@daily", "catch_up": "x"}},
    ):
        assert not VALIDATOR.is_valid(bad), bad
    assert VALIDATOR.is_valid({"concurrency": 2, "concurrency_key": "k", "schedule": {"cron": "@daily"}})


async def test_engine_load_refuses_bad_settings_set_from_python() -> None:
    engine = Engine()
    template = WorkflowTemplate(uid="py-bad", rate={"limit": 1, "period": -1})  # type: ignore[typeddict-item]
    with pytest.raises(TemplateError, match=r"rate\.period: must be a positive number, got -1"):
        await engine.load(template)
    engine.stop()
