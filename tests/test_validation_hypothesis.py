"""Property tests of the template loader: only `TemplateError` ever comes out.

Thousands of malformed templates (random JSON values, valid templates with
wrong types, missing fields or broken graphs) go through
`WorkflowTemplate.from_dict`; whatever is accepted must round-trip through
`as_dict`.
"""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import (
    WORKFLOW_KEYS,
    invalid_field_templates,
    json_values,
    mutated_templates,
    scalars,
    text,
    valid_templates,
)

from tukio import WorkflowTemplate
from tukio.dag import DAGValidationError
from tukio.errors import TemplateError
from tukio.workflow import TemplateGraphError

BASE = settings(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def examples(count: int) -> settings:
    """Settings for a fast property test of `count` examples."""
    return settings(BASE, max_examples=count)


def load(template: Any) -> WorkflowTemplate | TemplateError:
    """Load `template`; return the template or the `TemplateError` (nothing else may escape)."""
    try:
        return WorkflowTemplate.from_dict(template)
    except TemplateError as exc:
        error = exc
    assert error.problems, "a TemplateError lists at least one problem"
    for problem in error.problems:
        where, _, message = problem.partition(": ")
        assert where, f"problem without a location: {problem!r}"
        assert message, f"problem without a location: {problem!r}"
    assert str(error) == "; ".join(error.problems)
    return error


def assert_round_trip(wf: WorkflowTemplate) -> None:
    out = wf.as_dict()
    assert set(out) == set(WORKFLOW_KEYS) | set(wf.extra)
    again = WorkflowTemplate.from_dict(out)
    assert again.as_dict() == out
    assert wf.copy().as_dict() == out


@examples(400)
@given(json_values)
def test_random_json_values(value: Any) -> None:
    result = load(value)
    if isinstance(result, WorkflowTemplate):
        assert_round_trip(result)
    else:
        assert not isinstance(value, dict) or result.problems


@examples(400)
@given(st.dictionaries(st.sampled_from(WORKFLOW_KEYS), scalars | json_values))
def test_random_values_in_every_field(value: dict[str, Any]) -> None:
    result = load(value)
    if isinstance(result, WorkflowTemplate):
        assert_round_trip(result)


@examples(500)
@given(mutated_templates())
def test_mutated_templates(template: Any) -> None:
    result = load(template)
    if isinstance(result, WorkflowTemplate):
        assert_round_trip(result)


@examples(250)
@given(invalid_field_templates())
def test_a_wrong_field_is_always_rejected(template: dict[str, Any]) -> None:
    result = load(template)
    assert isinstance(result, TemplateError)


@examples(250)
@given(valid_templates())
def test_valid_templates_load_and_round_trip(template: dict[str, Any]) -> None:
    wf = WorkflowTemplate.from_dict(template)
    out = wf.as_dict()
    assert_round_trip(wf)
    # What was given is what is kept.
    for key in ("id", "title", "topics", "timeout"):
        if template.get(key) is not None:
            assert out[key] == template[key]
    assert out["policy"] == (template.get("policy") or "skip-until-unlock")
    assert out["schema"] == (template.get("schema") or 1)
    tasks = template.get("tasks", [])
    assert [t["id"] for t in out["tasks"]] == [t["id"] for t in tasks]
    for given_task, task in zip(tasks, out["tasks"], strict=True):
        assert task["name"] == given_task["name"]
        assert task["config"] == (given_task.get("config") or {})
        assert task["topics"] == given_task.get("topics", [])
        assert task["timeout"] == given_task.get("timeout")
        assert ("retry" in task) == (given_task.get("retry") is not None)
    graph = template.get("graph", {})
    assert {uid: set(succs) for uid, succs in out["graph"].items()} == {
        t["id"]: set(graph.get(t["id"], [])) for t in tasks
    }


@examples(100)
@given(valid_templates().filter(lambda t: t.get("tasks")), st.data())
def test_a_cycle_is_always_a_dag_validation_error(template: dict[str, Any], data: st.DataObject) -> None:
    uids = [t["id"] for t in template["tasks"]]
    # Link a task back to itself or to an earlier task that leads to it.
    i = data.draw(st.integers(0, len(uids) - 1))
    graph = template.setdefault("graph", {})
    path = uids[: i + 1]
    for up, down in itertools.pairwise(path):
        if down not in graph.setdefault(up, []):
            graph[up].append(down)
    graph.setdefault(uids[i], []).append(uids[0])
    result = load(template)
    assert isinstance(result, DAGValidationError)
    assert result.problems[-1].startswith("graph: cycle ")


@examples(100)
@given(valid_templates().filter(lambda t: t.get("tasks")), st.data())
def test_an_unknown_successor_is_always_a_template_graph_error(template: dict[str, Any], data: st.DataObject) -> None:
    uids = [t["id"] for t in template["tasks"]]
    uid = data.draw(st.sampled_from(uids))
    ghost = data.draw(text(min_size=1, max_size=6).filter(lambda s: s not in uids))
    template.setdefault("graph", {}).setdefault(uid, []).append(ghost)
    result = load(template)
    assert isinstance(result, TemplateGraphError)
    assert isinstance(result, KeyError)
    assert result.problems == [f"graph.{uid}: unknown task id {ghost!r}"]
