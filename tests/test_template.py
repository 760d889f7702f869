"""Task and workflow templates: building, (de)serialising, copying and validating."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tukio import TaskTemplate, WorkflowTemplate
from tukio.dag import DAGValidationError
from tukio.errors import TemplateError, TukioError, UnknownTaskName
from tukio.retry import RetryPolicy
from tukio.task import TukioTask
from tukio.utils import Listen
from tukio.workflow import OverrunPolicy, TemplateGraphError, WorkflowError, WorkflowRootTaskError

Registered = Callable[..., Any]
Names = Callable[[str], str]

# The example of SPEC.md, with every field set.
EXAMPLE: dict[str, Any] = {
    "id": "wf-1",
    "title": "workflow #1",
    "policy": "abort-running",
    "topics": ["abort"],
    "timeout": 30,
    "schema": 1,
    "tasks": [
        {"id": "f1", "name": "task1", "config": {"value": 1}, "timeout": 10, "topics": ["blob"]},
        {"id": "f2", "name": "task2", "config": {}, "timeout": None, "topics": None},
        {"id": "f3", "name": "task3", "config": {"nested": {"x": [1, 2]}}, "timeout": 0.5, "topics": []},
    ],
    "graph": {"f1": ["f2", "f3"], "f2": [], "f3": []},
}


def is_uuid4(value: Any) -> bool:
    return isinstance(value, str) and uuid.UUID(value).version == 4


def problems_of(template: Any) -> list[str]:
    """The problems `WorkflowTemplate.from_dict` reports for `template`."""
    with pytest.raises(TemplateError) as info:
        WorkflowTemplate.from_dict(template)
    return info.value.problems


def assert_problems(template: Any, *expected: str) -> TemplateError:
    """Check from_dict reports exactly one problem starting with each of `expected`."""
    with pytest.raises(TemplateError) as info:
        WorkflowTemplate.from_dict(template)
    error = info.value
    problems = error.problems
    assert len(problems) == len(expected), problems
    for prefix in expected:
        assert any(p.startswith(prefix) for p in problems), (prefix, problems)
    assert str(error) == "; ".join(problems)
    return error


def chain(*ids: str, **fields: Any) -> dict[str, Any]:
    """A template dict whose tasks ``ids`` run one after the other."""
    return {
        "tasks": [{"id": uid, "name": f"name-{uid}"} for uid in ids],
        "graph": {uid: [nxt] for uid, nxt in itertools.pairwise(ids)},
        **fields,
    }


# -- TaskTemplate -------------------------------------------------------------------


def test_task_template_defaults() -> None:
    task = TaskTemplate("work")
    assert task.name == "work"
    assert is_uuid4(task.uid)
    assert task.config == {}
    assert task.timeout is None
    assert task.topics == []
    assert task.listen is Listen.nothing
    assert task.retry is None
    assert TaskTemplate("work").uid != task.uid


def test_task_template_default_topics_are_not_shared() -> None:
    first, second = TaskTemplate("a"), TaskTemplate("b")
    assert first.topics is not None
    first.topics.append("mine")
    assert second.topics == []
    assert TaskTemplate("c").topics == []


def test_task_template_fields() -> None:
    config = {"a": 1}
    topics = ["x", "y"]
    task = TaskTemplate("work", uid="t1", config=config, timeout=2.5, topics=topics)
    assert task.uid == "t1"
    assert task.config is config
    assert task.timeout == 2.5
    assert task.topics == ["x", "y"]
    topics.append("z")
    assert task.topics == ["x", "y"]
    assert repr(task) == "<TaskTemplate name='work' uid='t1'>"


@pytest.mark.parametrize(
    ("topics", "mode"), [(None, Listen.everything), ([], Listen.nothing), (["a", "b"], Listen.topics)]
)
def test_task_template_listen(topics: list[str] | None, mode: Listen) -> None:
    assert TaskTemplate("work", topics=topics).listen is mode
    assert Listen.get(topics) is mode


@pytest.mark.parametrize("topics", ["abc", ("a",), {"a"}, 1])
def test_task_template_bad_topics(topics: Any) -> None:
    with pytest.raises(TypeError, match="topics must be None or a list of strings"):
        TaskTemplate("work", topics=topics)
    with pytest.raises(TypeError, match="topics must be None or a list of strings"):
        Listen.get(topics)


def test_task_template_from_dict_needs_only_a_name() -> None:
    task = TaskTemplate.from_dict({"name": "work"})
    assert task.name == "work"
    assert is_uuid4(task.uid)
    assert task.config == {}
    assert task.timeout is None
    assert task.topics == []
    assert task.listen is Listen.nothing


def test_task_template_from_dict_all_fields() -> None:
    config = {"deep": {"x": 1}}
    task = TaskTemplate.from_dict(
        {"id": "f1", "name": "work", "config": config, "topics": None, "timeout": 3, "unknown": "kept"}
    )
    assert task.uid == "f1"
    assert task.config == config
    config["deep"]["x"] = 2
    assert task.config == {"deep": {"x": 1}}
    assert task.topics is None
    assert task.listen is Listen.everything
    assert task.timeout == 3
    assert not hasattr(task, "unknown")
    assert task.extra == {"unknown": "kept"}
    assert task.as_dict() == {
        "id": "f1",
        "name": "work",
        "config": {"deep": {"x": 1}},
        "topics": None,
        "timeout": 3,
        "unknown": "kept",
    }


def test_task_template_from_dict_missing_name_is_a_key_error() -> None:
    with pytest.raises(KeyError, match=r"task\.name: missing") as info:
        TaskTemplate.from_dict({"id": "f1"})
    assert isinstance(info.value, TemplateError)
    assert info.value.problems == ["task.name: missing (every task needs the name of a registered task)"]
    assert str(info.value) == "task.name: missing (every task needs the name of a registered task)"


@pytest.mark.parametrize(
    ("task", "problem", "legacy"),
    [
        ({"name": 3}, "task.name: must be a non-empty string, got 3", TypeError),
        ({"name": ""}, "task.name: must be a non-empty string, got ''", TypeError),
        ({"name": "a", "id": 1}, "task.id: must be a string, got int", TypeError),
        ({"name": "a", "config": []}, "task.config: must be an object, got list", TypeError),
        ({"name": "a", "topics": "t"}, "task.topics: must be null or a list of strings, got str", TypeError),
        ({"name": "a", "topics": ["t", 2]}, "task.topics[1]: must be a string, got int", TypeError),
        ({"name": "a", "timeout": 0}, "task.timeout: must be a positive number, got 0", ValueError),
        ({"name": "a", "timeout": "1"}, "task.timeout: must be a positive number, got str", TypeError),
        ({"name": "a", "retry": 3}, "task.retry: must be an object, got int", TypeError),
        ("name", "task: must be an object, got str", TypeError),
    ],
)
def test_task_template_from_dict_bad_fields(task: Any, problem: str, legacy: type[Exception]) -> None:
    with pytest.raises(TemplateError) as info:
        TaskTemplate.from_dict(task)
    assert info.value.problems == [problem]
    assert isinstance(info.value, legacy)


def test_task_template_as_dict_has_exactly_its_keys() -> None:
    task = TaskTemplate("work", uid="t1")
    assert task.as_dict() == {"id": "t1", "name": "work", "config": {}, "topics": [], "timeout": None}
    with_retry = TaskTemplate.from_dict({"name": "work", "id": "t2", "retry": {"max_attempts": 3, "on": ["OSError"]}})
    assert isinstance(with_retry.retry, RetryPolicy)
    assert with_retry.as_dict() == {
        "id": "t2",
        "name": "work",
        "config": {},
        "topics": [],
        "timeout": None,
        "retry": {"max_attempts": 3, "delay": 0.0, "backoff": 1.0, "jitter": 0.0, "on": ["OSError"]},
    }
    assert TaskTemplate.from_dict(with_retry.as_dict()).as_dict() == with_retry.as_dict()


def test_task_template_copy() -> None:
    task = TaskTemplate("work", uid="t1", config={"deep": {"x": 1}}, timeout=2, topics=["a"])
    clone = task.copy()
    assert clone is not task
    assert clone.as_dict() == task.as_dict()
    clone.config["deep"]["x"] = 2
    assert task.config == {"deep": {"x": 1}}
    assert clone.topics is not None
    clone.topics.append("b")
    assert task.topics == ["a"]


async def test_task_template_new_task(registered: Registered, task_name: Names) -> None:
    class Holder:
        def __init__(self, config: Any) -> None:
            self.config = config

        async def run(self, data: Any) -> Any:
            return {"config": self.config, "data": data}

    name = task_name("template-task")
    registered(name, Holder, "run")
    template = TaskTemplate(name, uid="t1", config={"c": 1})
    task = template.new_task({"d": 1})
    assert isinstance(task, TukioTask)
    assert task.template is template
    assert await task == {"config": {"c": 1}, "data": {"d": 1}}
    assert task.event_source.task_template_id == "t1"


async def test_task_template_timeout_applies(registered: Registered, task_name: Names) -> None:
    async def forever(data: Any) -> Any:
        await asyncio.Event().wait()

    name = task_name("template-timeout")
    registered(name, forever)
    task = TaskTemplate(name, timeout=0.01).new_task({"in": 1})
    await asyncio.wait([task])
    assert task.as_dict()["state"] == "timeout"
    assert task.outputs == {"in": 1}


async def test_task_template_new_task_unknown_name(task_name: Names) -> None:
    with pytest.raises(UnknownTaskName):
        TaskTemplate(task_name("unknown")).new_task({})


# -- WorkflowTemplate: building ------------------------------------------------------


def test_workflow_template_defaults() -> None:
    wf = WorkflowTemplate()
    assert is_uuid4(wf.uid)
    assert wf.title is None
    assert wf.policy is OverrunPolicy.skip_until_unlock
    assert wf.topics is None
    assert wf.listen is Listen.everything
    assert wf.timeout is None
    assert wf.schema == 1
    assert wf.tasks == []
    assert len(wf.dag) == 0


def test_workflow_template_fields() -> None:
    wf = WorkflowTemplate(uid="w", policy="skip", topics=[], timeout=5, schema=1, title="T")
    assert (wf.uid, wf.policy, wf.topics, wf.timeout, wf.schema, wf.title) == ("w", OverrunPolicy.skip, [], 5, 1, "T")
    assert wf.listen is Listen.nothing
    assert WorkflowTemplate(topics=["a"]).listen is Listen.topics
    assert WorkflowTemplate(policy=OverrunPolicy.start_new).policy is OverrunPolicy.start_new
    assert repr(wf) == "<WorkflowTemplate uid='w' title='T' tasks=0>"


def test_workflow_template_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown overrun policy 'often'"):
        WorkflowTemplate(policy="often")
    with pytest.raises(TypeError, match="topics must be None or a list"):
        WorkflowTemplate(topics="abc")  # type: ignore[arg-type]


def test_overrun_policy_default() -> None:
    assert OverrunPolicy.get(None) is OverrunPolicy.skip_until_unlock
    assert OverrunPolicy.get("start-new") is OverrunPolicy.start_new


def test_add_delete_link_unlink() -> None:
    wf = WorkflowTemplate()
    a, b, c = TaskTemplate("x", uid="a"), TaskTemplate("x", uid="b"), TaskTemplate("x", uid="c")
    for task in (a, b, c):
        wf.add(task)
    assert wf.tasks == [a, b, c]
    with pytest.raises(TypeError, match="expected a TaskTemplate, got dict"):
        wf.add({"name": "x"})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="a task with id 'a' is already in the template"):
        wf.add(TaskTemplate("y", uid="a"))
    assert wf.tasks == [a, b, c]

    wf.link(a, b)
    wf.link(b, c)
    assert wf.root() is a
    assert wf.dag.successors(a) == [b]
    with pytest.raises(DAGValidationError, match="graph: cycle"):
        wf.link(c, a)
    assert wf.dag.successors(c) == []
    assert wf.as_dict()["graph"] == {"a": ["b"], "b": ["c"], "c": []}

    wf.unlink(b, c)
    assert wf.as_dict()["graph"] == {"a": ["b"], "b": [], "c": []}
    with pytest.raises(KeyError):
        wf.unlink(b, c)
    with pytest.raises(KeyError):
        wf.link(a, TaskTemplate("x", uid="elsewhere"))

    wf.delete(b)
    assert wf.tasks == [a, c]
    assert wf.as_dict()["graph"] == {"a": [], "c": []}
    with pytest.raises(KeyError):
        wf.delete(b)


def test_root() -> None:
    wf = WorkflowTemplate()
    with pytest.raises(WorkflowRootTaskError, match=r"^graph: no root task, expected 1$"):
        wf.root()
    f1, f4 = TaskTemplate("x", uid="f1"), TaskTemplate("x", uid="f4")
    wf.add(f1)
    assert wf.root() is f1
    wf.add(f4)
    with pytest.raises(WorkflowRootTaskError, match=r"^graph: 2 root tasks \(f1, f4\), expected 1$") as info:
        wf.root()
    assert isinstance(info.value, WorkflowError)
    assert isinstance(info.value, TemplateError)
    wf.link(f1, f4)
    assert wf.root() is f1


# -- WorkflowTemplate: from_dict, as_dict, copy --------------------------------------


def test_from_dict_as_dict_round_trip() -> None:
    wf = WorkflowTemplate.from_dict(EXAMPLE)
    assert wf.uid == "wf-1"
    assert wf.title == "workflow #1"
    assert wf.policy is OverrunPolicy.abort_running
    assert wf.topics == ["abort"]
    assert wf.listen is Listen.topics
    assert wf.timeout == 30
    assert wf.schema == 1
    assert [t.uid for t in wf.tasks] == ["f1", "f2", "f3"]
    assert wf.root().uid == "f1"
    assert wf.as_dict() == EXAMPLE
    assert WorkflowTemplate.from_dict(wf.as_dict()).as_dict() == EXAMPLE
    # The template does not share the input's mutable parts.
    assert wf.tasks[2].config is not EXAMPLE["tasks"][2]["config"]
    assert wf.topics is not EXAMPLE["topics"]


def test_from_dict_defaults() -> None:
    wf = WorkflowTemplate.from_dict({"tasks": [{"name": "only"}]})
    d = wf.as_dict()
    assert is_uuid4(d["id"])
    [task] = d["tasks"]
    assert is_uuid4(task["id"])
    assert d == {
        "id": d["id"],
        "title": None,
        "policy": "skip-until-unlock",
        "topics": None,
        "timeout": None,
        "schema": 1,
        "tasks": [{"id": task["id"], "name": "only", "config": {}, "topics": [], "timeout": None}],
        "graph": {task["id"]: []},
    }


def test_from_dict_keeps_unknown_keys() -> None:
    d = {**chain("f1", "f2"), "owner": "me", "x-extension": {"a": 1}}
    d["tasks"][0]["comment"] = "hello"
    wf = WorkflowTemplate.from_dict(d)
    out = wf.as_dict()
    assert list(out)[-2:] == ["owner", "x-extension"]  # after the keys tukio uses
    assert (out["owner"], out["x-extension"]) == ("me", {"a": 1})
    assert wf.extra == {"owner": "me", "x-extension": {"a": 1}}
    assert out["tasks"][0]["comment"] == "hello"
    assert "comment" not in out["tasks"][1]  # only when set
    assert wf.tasks[0].extra == {"comment": "hello"}
    # Kept as copies: changing the input changes nothing.
    d["x-extension"]["a"] = 2
    assert wf.as_dict()["x-extension"] == {"a": 1}
    assert WorkflowTemplate.from_dict(out).as_dict() == out
    clone = wf.copy()
    assert clone.as_dict() == out
    clone.extra["x-extension"]["a"] = 3
    clone.tasks[0].extra["comment"] = "changed"
    assert wf.as_dict() == out


def test_the_exec_key_of_a_report_is_not_kept() -> None:
    d = {**chain("f1", "f2"), "exec": {"state": "finished"}}
    d["tasks"][0]["exec"] = {"state": "finished"}
    out = WorkflowTemplate.from_dict(d).as_dict()
    assert "exec" not in out
    assert "exec" not in out["tasks"][0]


def test_extension_keys_cannot_be_keys_tukio_uses() -> None:
    with pytest.raises(ValueError, match="must not be keys tukio uses: exec, timeout"):
        TaskTemplate("work", extra={"timeout": 1, "exec": None, "mine": 1})
    with pytest.raises(ValueError, match="must not be keys tukio uses: graph"):
        WorkflowTemplate(extra={"graph": {}})
    assert TaskTemplate("work", uid="t", extra={"mine": 1}).as_dict() == {
        "id": "t",
        "name": "work",
        "config": {},
        "topics": [],
        "timeout": None,
        "mine": 1,
    }


def test_empty_template_loads() -> None:
    wf = WorkflowTemplate.from_dict({"tasks": [], "graph": {}})
    assert wf.tasks == []
    assert WorkflowTemplate.from_dict({}).tasks == []
    with pytest.raises(WorkflowRootTaskError, match="no root task"):
        wf.root()


def test_from_dict_accepts_several_roots_and_unknown_names() -> None:
    wf = WorkflowTemplate.from_dict(
        {"tasks": [{"id": "f1", "name": "not-registered-1"}, {"id": "f4", "name": "not-registered-2"}], "graph": {}}
    )
    assert [t.uid for t in wf.tasks] == ["f1", "f4"]


def test_copy_keeps_every_field_and_is_independent() -> None:
    wf = WorkflowTemplate.from_dict(EXAMPLE)
    clone = wf.copy()
    assert clone is not wf
    assert clone.as_dict() == EXAMPLE
    assert all(a is not b for a, b in zip(clone.tasks, wf.tasks, strict=True))
    # Changing the copy leaves the original alone.
    assert clone.topics is not None
    clone.topics.append("more")
    clone.tasks[0].config["value"] = 99
    f2, f3 = clone.tasks[1], clone.tasks[2]
    clone.link(f2, f3)
    clone.delete(clone.tasks[0])
    clone.title = "changed"
    assert wf.as_dict() == EXAMPLE
    assert clone.as_dict()["graph"] == {"f2": ["f3"], "f3": []}


# -- WorkflowTemplate.validate ------------------------------------------------------


def test_validate_passes(registered: Registered, task_name: Names) -> None:
    async def work(data: Any) -> Any:
        return data

    name = task_name("valid")
    registered(name, work)
    wf = WorkflowTemplate.from_dict(
        {"tasks": [{"id": "a", "name": name}, {"id": "b", "name": name}], "graph": {"a": ["b"]}}
    )
    wf.validate()
    assert wf.root().uid == "a"


def test_validate_root_errors(registered: Registered, task_name: Names) -> None:
    async def work(data: Any) -> Any:
        return data

    name = task_name("roots")
    registered(name, work)
    wf = WorkflowTemplate.from_dict(
        {"tasks": [{"id": "f1", "name": name}, {"id": "f4", "name": name}, {"id": "f5", "name": name}]}
    )
    with pytest.raises(WorkflowRootTaskError, match=r"^graph: 3 root tasks \(f1, f4, f5\), expected 1$") as info:
        wf.validate()
    assert not isinstance(info.value, UnknownTaskName)
    with pytest.raises(WorkflowRootTaskError, match=r"^graph: no root task, expected 1$"):
        WorkflowTemplate().validate()


def test_validate_unknown_names(registered: Registered, task_name: Names) -> None:
    async def work(data: Any) -> Any:
        return data

    known, missing_1, missing_2 = task_name("known"), task_name("missing"), task_name("missing")
    registered(known, work)
    wf = WorkflowTemplate.from_dict(
        {
            "tasks": [{"id": "a", "name": known}, {"id": "b", "name": missing_1}, {"id": "c", "name": missing_2}],
            "graph": {"a": ["b", "c"]},
        }
    )
    with pytest.raises(UnknownTaskName) as info:
        wf.validate()
    assert info.value.problems == [
        f"tasks[1].name: unknown task name '{missing_1}'",
        f"tasks[2].name: unknown task name '{missing_2}'",
    ]
    assert isinstance(info.value, KeyError)
    assert not isinstance(info.value, WorkflowRootTaskError)


def test_validate_both_problems_at_once(task_name: Names) -> None:
    first, second = task_name("missing"), task_name("missing")
    wf = WorkflowTemplate.from_dict({"tasks": [{"id": "f1", "name": first}, {"id": "f4", "name": second}]})
    with pytest.raises(TemplateError) as info:
        wf.validate()
    error = info.value
    assert isinstance(error, WorkflowRootTaskError)
    assert isinstance(error, UnknownTaskName)
    assert isinstance(error, KeyError)
    assert isinstance(error, TukioError)
    assert error.problems == [
        "graph: 2 root tasks (f1, f4), expected 1",
        f"tasks[0].name: unknown task name '{first}'",
        f"tasks[1].name: unknown task name '{second}'",
    ]
    assert str(error) == "; ".join(error.problems)


# -- JSON text and files ------------------------------------------------------------


def test_from_json_and_from_file(tmp_path: Path) -> None:
    text = json.dumps(EXAMPLE)
    assert WorkflowTemplate.from_json(text).as_dict() == EXAMPLE
    assert WorkflowTemplate.from_json(text.encode()).as_dict() == EXAMPLE
    path = tmp_path / "workflow.json"
    path.write_text(json.dumps(EXAMPLE, indent=2), encoding="utf-8")
    assert WorkflowTemplate.from_file(path).as_dict() == EXAMPLE
    assert WorkflowTemplate.from_file(str(path)).as_dict() == EXAMPLE


def test_bad_json_names_line_and_column(tmp_path: Path) -> None:
    text = '{\n  "tasks": [],\n  "graph": {,}\n}'
    with pytest.raises(TemplateError, match=r"^json: line 3 column 13: Expecting property name") as info:
        WorkflowTemplate.from_json(text)
    assert info.value.problems[0].startswith("json: line 3 column 13")
    path = tmp_path / "bad.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(TemplateError, match=r"^json: line 3 column 13"):
        WorkflowTemplate.from_file(path)
    with pytest.raises(TemplateError, match=r"^json: line 1 column 1: Expecting value"):
        WorkflowTemplate.from_json("")


def test_json_that_is_not_utf8_or_not_text() -> None:
    with pytest.raises(TemplateError, match=r"^json: "):
        WorkflowTemplate.from_json(b"\xff\xfe\xfa")
    with pytest.raises(TemplateError, match=r"^json: "):
        WorkflowTemplate.from_json(42)  # type: ignore[arg-type]


def test_valid_json_of_a_bad_template() -> None:
    with pytest.raises(TemplateError, match=r"^template: must be an object, got list$"):
        WorkflowTemplate.from_json("[1, 2]")
    with pytest.raises(KeyError, match=r"tasks\[0\]\.name: missing"):
        WorkflowTemplate.from_json('{"tasks": [{"id": "f1"}]}')


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        WorkflowTemplate.from_file(tmp_path / "nowhere.json")


# -- every problem at once, with its location -----------------------------------------


def test_every_problem_is_listed_with_its_location() -> None:
    template = {
        "id": 7,
        "title": ["t"],
        "policy": "sometimes",
        "topics": "abort",
        "timeout": 0,
        "schema": 0,
        "tasks": [
            {"id": "f1", "name": "a"},
            {"id": "f2", "name": "b", "config": [1], "topics": [1]},
            {"id": "f3", "name": "c", "timeout": -1},
            {"id": "f3"},
            "not an object",
        ],
        "graph": {"f1": ["f2", "f9"], "f7": [], "f2": "f3"},
    }
    error = assert_problems(
        template,
        "id: must be a string, got int",
        "title: must be a string, got list",
        "policy: unknown overrun policy 'sometimes'",
        "topics: must be null or a list of strings, got str",
        "timeout: must be a positive number, got 0",
        "schema: must be a positive integer, got 0",
        "tasks[1].config: must be an object, got list",
        "tasks[1].topics[0]: must be a string, got int",
        "tasks[2].timeout: must be a positive number",
        "tasks[3].name: missing",
        "tasks[3].id: duplicate id 'f3'",
        "tasks[4]: must be an object, got str",
        "graph.f1: unknown task id 'f9'",
        "graph.f7: unknown task id 'f7'",
        "graph.f2: successors must be a list, got str",
    )
    # Catchable as every legacy class involved.
    for legacy in (KeyError, TypeError, ValueError, TemplateGraphError, TukioError):
        assert isinstance(error, legacy)


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ([], "template: must be an object, got list"),
        (None, "template: must be an object, got null"),
        ("{}", "template: must be an object, got str"),
        ({"policy": 3}, "policy: unknown overrun policy 3"),
        ({"topics": ["a", None]}, "topics[1]: must be a string, got null"),
        ({"topics": {"a": 1}}, "topics: must be null or a list of strings, got dict"),
        ({"timeout": "30"}, "timeout: must be a positive number, got str"),
        ({"timeout": True}, "timeout: must be a positive number, got bool"),
        ({"timeout": float("inf")}, "timeout: must be a positive number, got inf"),
        ({"timeout": float("nan")}, "timeout: must be a positive number, got nan"),
        ({"timeout": 10**400}, "timeout: must be a positive number"),
        ({"schema": "1"}, "schema: must be a positive integer, got '1'"),
        ({"schema": True}, "schema: must be a positive integer, got True"),
        ({"schema": -3}, "schema: must be a positive integer, got -3"),
        ({"schema": 1.0}, "schema: must be a positive integer, got 1.0"),
        ({"tasks": {"f1": {"name": "a"}}}, "tasks: must be a list, got dict"),
        ({"graph": []}, "graph: must be an object, got list"),
        ({"tasks": [{"name": None}]}, "tasks[0].name: must be a non-empty string, got None"),
        ({"tasks": [{"name": "a", "config": "c"}]}, "tasks[0].config: must be an object, got str"),
        ({"tasks": [{"name": "a", "topics": "t"}]}, "tasks[0].topics: must be null or a list of strings, got str"),
        ({"tasks": [{"name": "a", "timeout": [1]}]}, "tasks[0].timeout: must be a positive number, got list"),
        ({"tasks": [{"name": "a", "timeout": 10**400}]}, "tasks[0].timeout: must be a positive number"),
        ({"tasks": [{"id": "f1", "name": "a"}], "graph": {"f1": [1]}}, "graph.f1: successor must be a task id"),
        ({"tasks": [{"id": "f1", "name": "a"}], "graph": {"f1": None}}, "graph.f1: successors must be a list"),
        ({"tasks": [{"id": "f1", "name": "a"}, {"id": "f1", "name": "b"}]}, "tasks[1].id: duplicate id 'f1'"),
    ],
)
def test_single_problems(template: Any, problem: str) -> None:
    assert_problems(template, problem)


def test_cycle_is_reported_with_its_path() -> None:
    error = assert_problems(chain("f1", "f2", graph={"f1": ["f2"], "f2": ["f1"]}), "graph: cycle ")
    assert error.problems[0] in ("graph: cycle f1 -> f2 -> f1", "graph: cycle f2 -> f1 -> f2")


def test_cycle_message_does_not_depend_on_the_hash_seed() -> None:
    # The same template must give the same error on every run of the program.
    code = (
        "from tukio import WorkflowTemplate\n"
        "try:\n"
        "    WorkflowTemplate.from_dict({'tasks': [{'id': 'f1', 'name': 'a'}, {'id': 'f2', 'name': 'b'},"
        " {'id': 'f3', 'name': 'c'}], 'graph': {'f1': ['f2'], 'f2': ['f3'], 'f3': ['f1']}})\n"
        "except Exception as exc:\n"
        "    print(exc)\n"
    )
    messages = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
        ).stdout.strip()
        for seed in range(4)
    }
    assert len(messages) == 1, messages
    assert messages.pop().startswith("graph: cycle ")


def test_cycle_is_reported_with_other_problems() -> None:
    template = chain("f1", "f2", "f3", graph={"f1": ["f2"], "f2": ["f3"], "f3": ["f2"]})
    template["tasks"][2]["timeout"] = -1
    error = assert_problems(template, "tasks[2].timeout: must be a positive number, got -1", "graph: cycle ")
    assert error.problems[1] in ("graph: cycle f2 -> f3 -> f2", "graph: cycle f3 -> f2 -> f3")
    assert isinstance(error, DAGValidationError)


def test_no_cycle_check_on_a_broken_graph() -> None:
    # The unknown id already makes the graph unusable; no cycle is reported on top.
    template = chain("f1", "f2", graph={"f1": ["f2"], "f2": ["f1", "f9"]})
    assert_problems(template, "graph.f2: unknown task id 'f9'")


# -- legacy exception classes --------------------------------------------------------


def test_legacy_cycle_is_a_dag_validation_error() -> None:
    with pytest.raises(DAGValidationError, match="graph: cycle"):
        WorkflowTemplate.from_dict(chain("f1", "f2", graph={"f1": ["f2"], "f2": ["f1"]}))


def test_legacy_unknown_graph_id_is_a_key_error_and_template_graph_error() -> None:
    template = chain("f1", graph={"f3": ["f1"]})
    with pytest.raises(KeyError, match=r"graph\.f3: unknown task id 'f3'"):
        WorkflowTemplate.from_dict(template)
    with pytest.raises(TemplateGraphError, match=r"graph\.f3: unknown task id 'f3'"):
        WorkflowTemplate.from_dict(template)
    with pytest.raises(TemplateGraphError, match=r"graph\.f1: unknown task id 'f9'"):
        WorkflowTemplate.from_dict(chain("f1", graph={"f1": ["f9"]}))


def test_legacy_missing_name_is_a_key_error() -> None:
    with pytest.raises(KeyError, match=r"tasks\[0\]\.name: missing"):
        WorkflowTemplate.from_dict({"tasks": [{"id": "f1"}], "graph": {}})


def test_legacy_unknown_policy_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="policy: unknown overrun policy 'sometimes'"):
        WorkflowTemplate.from_dict({"policy": "sometimes"})


def test_legacy_successors_not_a_list_is_a_type_error() -> None:
    with pytest.raises(TypeError, match=r"graph\.f1: successors must be a list, got str"):
        WorkflowTemplate.from_dict(chain("f1", "f2", graph={"f1": "f2"}))


def test_error_str_is_the_problems() -> None:
    # Mixed errors are also KeyErrors, whose str() would otherwise be a repr.
    with pytest.raises(TemplateError) as info:
        WorkflowTemplate.from_dict({"tasks": [{"id": "f1"}], "graph": {"f1": "x"}})
    assert str(info.value) == (
        "tasks[0].name: missing (every task needs the name of a registered task); "
        "graph.f1: successors must be a list, got str"
    )
    assert isinstance(info.value, KeyError)
    assert isinstance(info.value, TypeError)
    assert type(info.value).__name__ == "TemplateError"


# -- retry objects -----------------------------------------------------------------


def test_retry_object_is_loaded() -> None:
    retry = {"max_attempts": 4, "delay": 0.5, "backoff": 2, "max_delay": 3, "jitter": 0.1, "on": ["OSError"]}
    wf = WorkflowTemplate.from_dict({"tasks": [{"id": "f1", "name": "a", "retry": retry}]})
    policy = wf.tasks[0].retry
    assert policy == RetryPolicy(max_attempts=4, delay=0.5, backoff=2.0, max_delay=3.0, jitter=0.1, on=("OSError",))
    assert wf.as_dict()["tasks"][0]["retry"] == {**retry, "backoff": 2.0, "max_delay": 3.0}
    assert WorkflowTemplate.from_dict(wf.as_dict()).as_dict() == wf.as_dict()
    assert WorkflowTemplate.from_dict({"tasks": [{"name": "a", "retry": None}]}).tasks[0].retry is None
    assert WorkflowTemplate.from_dict({"tasks": [{"name": "a", "retry": {}}]}).tasks[0].retry == RetryPolicy()


@pytest.mark.parametrize(
    ("retry", "problems"),
    [
        ([], ["tasks[0].retry: must be an object, got list"]),
        ({"max_attempts": 0}, ["tasks[0].retry.max_attempts: must be >= 1, got 0"]),
        ({"max_attempts": 2.5}, ["tasks[0].retry.max_attempts: must be an integer, got float"]),
        ({"max_attempts": 2.0}, ["tasks[0].retry.max_attempts: must be an integer, got float"]),
        ({"max_attempts": True}, ["tasks[0].retry.max_attempts: must be an integer, got bool"]),
        ({"delay": -1}, ["tasks[0].retry.delay: must be >= 0, got -1"]),
        ({"delay": "1"}, ["tasks[0].retry.delay: must be a number, got str"]),
        ({"delay": float("nan")}, ["tasks[0].retry.delay: must be >= 0, got nan"]),
        ({"backoff": 0.5}, ["tasks[0].retry.backoff: must be >= 1, got 0.5"]),
        ({"max_delay": -0.1}, ["tasks[0].retry.max_delay: must be >= 0, got -0.1"]),
        ({"jitter": 1.5}, ["tasks[0].retry.jitter: must be a fraction between 0 and 1, got 1.5"]),
        ({"jitter": -0.5}, ["tasks[0].retry.jitter: must be >= 0, got -0.5"]),
        ({"on": "OSError"}, ["tasks[0].retry.on: must be a list of exception class names, got str"]),
        ({"on": ["OSError", 3, ""]}, ["tasks[0].retry.on[1]: must be an exception class name, got 3",
                                      "tasks[0].retry.on[2]: must be an exception class name, got ''"]),
        ({"attempts": 3}, ["tasks[0].retry.attempts: unknown field (expected one of max_attempts, delay, backoff, "
                           "max_delay, jitter, on)"]),
    ],
)  # fmt: skip
def test_bad_retry_objects(retry: Any, problems: list[str]) -> None:
    assert problems_of({"tasks": [{"id": "f1", "name": "a", "retry": retry}]}) == problems


def test_retry_numbers_that_do_not_fit_a_float() -> None:
    problems = problems_of({"tasks": [{"name": "a", "retry": {"delay": 10**400, "max_delay": 10**400}}]})
    assert [p.split(":")[0] for p in problems] == ["tasks[0].retry.delay", "tasks[0].retry.max_delay"]


def test_several_bad_retry_fields_at_once() -> None:
    problems = problems_of(
        {"tasks": [{"name": "a", "retry": {"max_attempts": 0, "delay": -1, "backoff": 0, "on": 1, "x": 1}}]}
    )
    assert [p.split(":")[0] for p in problems] == [
        "tasks[0].retry.x",
        "tasks[0].retry.max_attempts",
        "tasks[0].retry.delay",
        "tasks[0].retry.backoff",
        "tasks[0].retry.on",
    ]


def test_a_long_list_of_problems_is_cut_in_the_message_but_kept_whole() -> None:
    tasks = [{"id": f"t{i}", "timeout": -1} for i in range(30)]
    with pytest.raises(TemplateError) as info:
        WorkflowTemplate.from_dict({"tasks": tasks, "graph": {}})
    problems = info.value.problems
    assert len(problems) == 60  # a missing name and a bad timeout for each task
    message = str(info.value)
    assert message.startswith("tasks[0].name: missing")
    assert message.count(";") == 20
    assert message.endswith("; and 40 more problems (see .problems)")
    assert all(p not in message for p in problems[20:])
