"""The JSON Schema of the workflow format stays in sync with the loader.

`jsonschema` is a test dependency only: tukio itself never imports it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from strategies import invalid_field_templates, valid_templates

from tukio import RetryPolicy, TaskTemplate, WorkflowTemplate
from tukio.errors import TemplateError
from tukio.policy import OverrunPolicy
from tukio.schema import load_schema

BASE = settings(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
VALIDATOR = jsonschema.Draft202012Validator(load_schema())


def schema_accepts(template: Any) -> bool:
    return VALIDATOR.is_valid(template)


def loader_accepts(template: Any) -> bool:
    try:
        WorkflowTemplate.from_dict(template)
    except TemplateError:
        return False
    return True


def test_the_schema_is_a_valid_draft_2020_12_schema() -> None:
    schema = load_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    # Each call gives a fresh dict.
    schema["title"] = "changed"
    assert load_schema()["title"] != "changed"


def test_the_schema_names_what_the_code_defines() -> None:
    schema = load_schema()
    assert set(schema["properties"]["policy"]["enum"]) == {p.value for p in OverrunPolicy} | {None}
    task_keys = set(TaskTemplate.from_dict({"name": "a", "retry": {}}).as_dict())
    assert set(schema["$defs"]["task"]["properties"]) == task_keys
    assert set(schema["$defs"]["retry"]["properties"]) == {f.name for f in dataclasses.fields(RetryPolicy)}
    # The flow-control keys are written only when set (1.1.2 templates round-trip unchanged).
    flow = {"concurrency": 1, "concurrency_key": "k", "rate": {"limit": 1, "period": 1}, "schedule": {"cron": "@daily"}}
    assert set(WorkflowTemplate().as_dict()).isdisjoint(flow)
    assert set(schema["properties"]) == set(WorkflowTemplate.from_dict(flow).as_dict())


EXAMPLE: dict[str, Any] = {
    "id": "wf-1",
    "title": "workflow #1",
    "policy": "abort-running",
    "topics": ["abort"],
    "timeout": 30,
    "schema": 1,
    "tasks": [
        {"id": "f1", "name": "task1", "config": {"value": 1}, "timeout": 10, "topics": ["blob"]},
        {"id": "f2", "name": "task2", "retry": {"max_attempts": 3, "delay": 0.5, "on": ["OSError"]}},
    ],
    "graph": {"f1": ["f2"]},
}


@pytest.mark.parametrize(
    "template",
    [
        EXAMPLE,
        {},
        {"tasks": [], "graph": {}},
        {"id": None, "title": None, "policy": None, "topics": None, "timeout": None, "schema": None},
        {"topics": [], "timeout": 0.001, "tasks": [{"name": "a", "config": None, "topics": None, "timeout": None}]},
        {"tasks": [{"name": "a", "retry": None}, {"name": "b", "retry": {}}]},
        {"tasks": [{"name": "a", "retry": {"jitter": 1, "backoff": 1, "delay": 0, "max_delay": 0, "on": None}}]},
        # Unknown keys are ignored, at the top and in tasks.
        {"owner": "me", "tasks": [{"name": "a", "comment": "hello"}]},
    ],
)
def test_valid_templates_pass_both(template: dict[str, Any]) -> None:
    assert schema_accepts(template)
    assert loader_accepts(template)
    assert schema_accepts(WorkflowTemplate.from_dict(template).as_dict())


SINGLE_FIELD_INVALID: list[tuple[str, Any]] = [
    ("not an object", ["tasks"]),
    ("id not a string", {"id": 1}),
    ("title not a string", {"title": False}),
    ("unknown policy", {"policy": "sometimes"}),
    ("topics a string", {"topics": "abort"}),
    ("topics item not a string", {"topics": ["a", 1]}),
    ("timeout zero", {"timeout": 0}),
    ("timeout negative", {"timeout": -1.5}),
    ("timeout a string", {"timeout": "30"}),
    ("timeout a boolean", {"timeout": True}),
    ("schema zero", {"schema": 0}),
    ("schema negative", {"schema": -2}),
    ("schema a string", {"schema": "1"}),
    ("schema a boolean", {"schema": True}),
    ("tasks an object", {"tasks": {"f1": {"name": "a"}}}),
    ("task not an object", {"tasks": ["a"]}),
    ("task without name", {"tasks": [{"id": "f1"}]}),
    ("task name empty", {"tasks": [{"name": ""}]}),
    ("task name null", {"tasks": [{"name": None}]}),
    ("task id not a string", {"tasks": [{"name": "a", "id": 1}]}),
    ("task config a list", {"tasks": [{"name": "a", "config": [1]}]}),
    ("task topics a string", {"tasks": [{"name": "a", "topics": "t"}]}),
    ("task topics item not a string", {"tasks": [{"name": "a", "topics": [None]}]}),
    ("task timeout zero", {"tasks": [{"name": "a", "timeout": 0}]}),
    ("task timeout a list", {"tasks": [{"name": "a", "timeout": [1]}]}),
    ("retry a list", {"tasks": [{"name": "a", "retry": []}]}),
    ("retry unknown field", {"tasks": [{"name": "a", "retry": {"attempts": 3}}]}),
    ("retry max_attempts zero", {"tasks": [{"name": "a", "retry": {"max_attempts": 0}}]}),
    ("retry max_attempts fractional", {"tasks": [{"name": "a", "retry": {"max_attempts": 1.5}}]}),
    ("retry max_attempts a boolean", {"tasks": [{"name": "a", "retry": {"max_attempts": True}}]}),
    ("retry delay negative", {"tasks": [{"name": "a", "retry": {"delay": -1}}]}),
    ("retry delay a string", {"tasks": [{"name": "a", "retry": {"delay": "1"}}]}),
    ("retry backoff below 1", {"tasks": [{"name": "a", "retry": {"backoff": 0.5}}]}),
    ("retry max_delay null", {"tasks": [{"name": "a", "retry": {"max_delay": None}}]}),
    ("retry max_delay negative", {"tasks": [{"name": "a", "retry": {"max_delay": -0.1}}]}),
    ("retry jitter above 1", {"tasks": [{"name": "a", "retry": {"jitter": 1.5}}]}),
    ("retry jitter negative", {"tasks": [{"name": "a", "retry": {"jitter": -0.1}}]}),
    ("retry on a string", {"tasks": [{"name": "a", "retry": {"on": "OSError"}}]}),
    ("retry on item empty", {"tasks": [{"name": "a", "retry": {"on": [""]}}]}),
    ("retry on item not a string", {"tasks": [{"name": "a", "retry": {"on": [3]}}]}),
    ("graph a list", {"graph": []}),
    ("graph successors a string", {"tasks": [{"id": "f1", "name": "a"}], "graph": {"f1": "f2"}}),
    ("graph successors null", {"tasks": [{"id": "f1", "name": "a"}], "graph": {"f1": None}}),
    ("graph successor not a string", {"tasks": [{"id": "f1", "name": "a"}], "graph": {"f1": [1]}}),
]


@pytest.mark.parametrize(("case", "template"), SINGLE_FIELD_INVALID, ids=[case for case, _ in SINGLE_FIELD_INVALID])
def test_single_field_invalid_templates_fail_both(case: str, template: Any) -> None:
    assert not schema_accepts(template), case
    assert not loader_accepts(template), case


# What a JSON Schema cannot express: the loader alone rejects these, so they
# are tested against the loader only (the schema accepts them).
LOADER_ONLY: list[tuple[str, Any]] = [
    ("cycle", {"tasks": [{"id": "f1", "name": "a"}, {"id": "f2", "name": "b"}], "graph": {"f1": ["f2"], "f2": ["f1"]}}),
    ("self loop", {"tasks": [{"id": "f1", "name": "a"}], "graph": {"f1": ["f1"]}}),
    ("unknown graph key", {"tasks": [{"id": "f1", "name": "a"}], "graph": {"f3": []}}),
    ("unknown successor", {"tasks": [{"id": "f1", "name": "a"}], "graph": {"f1": ["f9"]}}),
    ("duplicate task ids", {"tasks": [{"id": "f1", "name": "a"}, {"id": "f1", "name": "b"}]}),
    # Not JSON at all, though Python's json module reads and writes them.
    ("infinite timeout", {"timeout": float("inf")}),
    ("NaN retry delay", {"tasks": [{"name": "a", "retry": {"delay": float("nan")}}]}),
    # JSON Schema counts 2.0 as an integer; the loader wants a real int.
    ("integral float max_attempts", {"tasks": [{"name": "a", "retry": {"max_attempts": 2.0}}]}),
]


@pytest.mark.parametrize(("case", "template"), LOADER_ONLY, ids=[case for case, _ in LOADER_ONLY])
def test_what_only_the_loader_rejects(case: str, template: Any) -> None:
    assert not loader_accepts(template), case


def test_the_schema_cannot_see_graph_semantics() -> None:
    # Documents the limits above: structurally fine, so the schema says yes.
    for case, template in LOADER_ONLY[:5]:
        assert schema_accepts(template), case


@settings(BASE, max_examples=250)
@given(valid_templates())
def test_generated_valid_templates_pass_both(template: dict[str, Any]) -> None:
    assert schema_accepts(template)
    wf = WorkflowTemplate.from_dict(template)
    assert schema_accepts(wf.as_dict())


@settings(BASE, max_examples=250)
@given(invalid_field_templates())
def test_generated_single_field_invalid_templates_fail_both(template: dict[str, Any]) -> None:
    assert not schema_accepts(template)
    assert not loader_accepts(template)
