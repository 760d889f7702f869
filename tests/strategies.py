"""Hypothesis strategies for workflow templates (valid, random and mutated).

Shared by the property tests of the loader and of the JSON Schema.
"""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import strategies as st

# st.text() draws from all of Unicode, which is slow; these strings are opaque to
# the loader, so a small alphabet (with some non-ASCII) finds the same bugs.
ALPHABET = "abcf01-_./ é\u2603"


def text(min_size: int = 0, max_size: int = 8) -> st.SearchStrategy[str]:
    """Short strings from `ALPHABET`."""
    return st.text(alphabet=ALPHABET, min_size=min_size, max_size=max_size)


POLICIES = ("skip", "start-new", "skip-until-unlock", "abort-running")
WORKFLOW_KEYS = ("id", "title", "policy", "topics", "timeout", "schema", "tasks", "graph")
TASK_KEYS = ("id", "name", "config", "topics", "timeout", "retry")
RETRY_KEYS = ("max_attempts", "delay", "backoff", "max_delay", "jitter", "on")

# Anything json.loads can produce: NaN, infinities, and integers too large for a
# float (json.loads("1" + "0" * 400) is an int), which hypothesis alone rarely draws.
huge_ints = st.just(10**400)
scalars = st.none() | st.booleans() | st.integers() | huge_ints | st.floats() | text(max_size=8)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(text(max_size=6), children, max_size=4),
    max_leaves=8,
)
# JSON values that compare equal to themselves (no NaN), for round trips.
plain_scalars = st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.floats(allow_nan=False) | text(max_size=8)
plain_json = st.recursive(
    plain_scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(text(max_size=6), children, max_size=3),
    max_leaves=4,
)

ids = text(min_size=1, max_size=6)
names = text(min_size=1, max_size=10)
topic_lists = st.none() | st.lists(text(max_size=8), max_size=3)
timeouts = st.none() | st.integers(1, 10**6) | st.floats(min_value=1e-3, max_value=1e6)
# Keys no version of the format uses: the loader must ignore them.
extension_keys = text(min_size=1, max_size=6).map(lambda s: f"x-{s}")


@st.composite
def retries(draw: st.DrawFn) -> dict[str, Any]:
    """A valid retry object."""
    fields = {
        "max_attempts": st.integers(1, 20),
        "delay": st.integers(0, 100) | st.floats(0, 100),
        "backoff": st.integers(1, 10) | st.floats(1, 10),
        "max_delay": st.integers(0, 100) | st.floats(0, 100),
        "jitter": st.sampled_from([0, 1]) | st.floats(0, 1),
        "on": st.none() | st.lists(text(min_size=1, max_size=12), max_size=3),
    }
    chosen = draw(st.lists(st.sampled_from(RETRY_KEYS), unique=True))
    return {key: draw(fields[key]) for key in chosen}


@st.composite
def valid_tasks(draw: st.DrawFn, uid: str) -> dict[str, Any]:
    """A valid task object with id `uid`; optional fields present or not."""
    task: dict[str, Any] = {"id": uid, "name": draw(names)}
    optional = {
        "config": st.none() | st.dictionaries(text(max_size=6), plain_json, max_size=3),
        "topics": topic_lists,
        "timeout": timeouts,
        "retry": st.none() | retries(),
    }
    for key in draw(st.lists(st.sampled_from(list(optional)), unique=True)):
        task[key] = draw(optional[key])
    if draw(st.booleans()):
        task[draw(extension_keys)] = draw(plain_json)
    return task


@st.composite
def valid_templates(draw: st.DrawFn, max_tasks: int = 4) -> dict[str, Any]:
    """A structurally valid workflow template (any number of roots, any names)."""
    uids = draw(st.lists(ids, max_size=max_tasks, unique=True))
    template: dict[str, Any] = {}
    optional = {
        "id": ids,
        "title": st.none() | text(max_size=12),
        "policy": st.none() | st.sampled_from(POLICIES),
        "topics": topic_lists,
        "timeout": timeouts,
        "schema": st.none() | st.integers(min_value=1, max_value=2**31),
    }
    for key in draw(st.lists(st.sampled_from(list(optional)), unique=True)):
        template[key] = draw(optional[key])
    if uids or draw(st.booleans()):
        template["tasks"] = [draw(valid_tasks(uid)) for uid in uids]
    # Edges only go forward in the task list: no cycle is possible.
    graph: dict[str, list[str]] = {}
    for i, uid in enumerate(uids):
        later = uids[i + 1 :]
        successors = draw(st.lists(st.sampled_from(later), unique=True)) if later else []
        if successors or draw(st.booleans()):
            graph[uid] = successors
    if graph or draw(st.booleans()):
        template["graph"] = graph
    if draw(st.booleans()):
        template[draw(extension_keys)] = draw(plain_json)
    return template


@st.composite
def mutated_templates(draw: st.DrawFn) -> dict[str, Any] | Any:
    """A valid template changed in one to three places, in any way."""
    template: Any = copy.deepcopy(draw(valid_templates(max_tasks=3)))
    for _ in range(draw(st.integers(1, 3))):
        template = draw(_mutate(template))
    return template


@st.composite
def _mutate(draw: st.DrawFn, template: Any) -> Any:
    if not isinstance(template, dict):
        return template
    tasks = template.get("tasks")
    task_list = tasks if isinstance(tasks, list) else []
    graph = template.get("graph")
    graph_dict = graph if isinstance(graph, dict) else None
    kind = draw(
        st.sampled_from(
            [
                "top-value",
                "top-delete",
                "task-value",
                "task-delete",
                "task-replace",
                "retry-value",
                "graph-value",
                "graph-successor",
                "graph-cycle",
                "whole",
            ]
        )
    )
    match kind:
        case "top-value":
            template[draw(st.sampled_from(WORKFLOW_KEYS))] = draw(json_values)
        case "top-delete":
            template.pop(draw(st.sampled_from(WORKFLOW_KEYS)), None)
        case "task-value" if task_list:
            task = draw(st.sampled_from(task_list))
            if isinstance(task, dict):
                task[draw(st.sampled_from(TASK_KEYS))] = draw(json_values)
        case "task-delete" if task_list:
            task = draw(st.sampled_from(task_list))
            if isinstance(task, dict):
                task.pop(draw(st.sampled_from(TASK_KEYS)), None)
        case "task-replace" if task_list:
            task_list[draw(st.integers(0, len(task_list) - 1))] = draw(json_values)
        case "retry-value" if task_list:
            task = draw(st.sampled_from(task_list))
            if isinstance(task, dict):
                retry = task.get("retry")
                retry = retry if isinstance(retry, dict) else {}
                retry[draw(st.sampled_from((*RETRY_KEYS, "unknown")))] = draw(json_values)
                task["retry"] = retry
        case "graph-value" if graph_dict is not None:
            key = draw(st.sampled_from([*_ids_of(task_list), "ghost"]))
            graph_dict[key] = draw(json_values)
        case "graph-successor" if graph_dict is not None and graph_dict:
            key = draw(st.sampled_from(sorted(graph_dict)))
            successors = graph_dict[key]
            if isinstance(successors, list):
                successors.append(draw(json_values | st.sampled_from(["ghost", *_ids_of(task_list)])))
        case "graph-cycle" if graph_dict is not None and _ids_of(task_list):
            uid = draw(st.sampled_from(_ids_of(task_list)))
            successors = graph_dict.setdefault(uid, [])
            if isinstance(successors, list):
                successors.append(uid)
        case "whole":
            return draw(json_values)
        case _:
            template[draw(extension_keys)] = draw(json_values)
    return template


def _ids_of(tasks: list[Any]) -> list[str]:
    return [t["id"] for t in tasks if isinstance(t, dict) and isinstance(t.get("id"), str)]


@st.composite
def invalid_field_templates(draw: st.DrawFn) -> dict[str, Any]:
    """A valid template with one field given a value of the wrong type."""
    template = draw(valid_templates(max_tasks=3))
    tasks = template.get("tasks") or []
    targets = ["top"] + (["task", "retry"] if tasks else [])
    match draw(st.sampled_from(targets)):
        case "top":
            key, bad = draw(st.sampled_from(_BAD_TOP))
            template[key] = draw(bad)
        case "task":
            task = draw(st.sampled_from(tasks))
            key, bad = draw(st.sampled_from(_BAD_TASK))
            task[key] = draw(bad)
        case _:
            task = draw(st.sampled_from(tasks))
            key, bad = draw(st.sampled_from(_BAD_RETRY))
            task["retry"] = {key: draw(bad)}
    return template


_not_str = st.booleans() | st.integers() | st.floats() | st.lists(text(max_size=2), max_size=2)
_not_positive = st.integers(max_value=0) | st.floats(max_value=0) | st.booleans() | text(max_size=3) | st.just([])
_BAD_TOP = [
    ("id", _not_str),
    ("title", _not_str),
    ("policy", text(max_size=5).filter(lambda s: s not in POLICIES) | st.integers()),
    ("topics", text(max_size=3) | st.integers() | st.lists(st.integers(), min_size=1, max_size=2)),
    ("timeout", _not_positive),
    (
        "schema",
        st.integers(max_value=0) | st.floats().filter(lambda f: not f.is_integer()) | text(max_size=2) | st.booleans(),
    ),
    ("tasks", text(max_size=3) | st.integers() | st.dictionaries(text(max_size=2), st.none(), max_size=2)),
    ("graph", text(max_size=3) | st.integers() | st.lists(st.none(), max_size=2)),
]
_BAD_TASK = [
    ("id", _not_str),
    ("name", _not_str | st.just("") | st.none()),
    ("config", text(max_size=3) | st.integers() | st.lists(st.none(), max_size=2) | st.booleans()),
    ("topics", text(max_size=3) | st.integers() | st.lists(st.integers(), min_size=1, max_size=2)),
    ("timeout", _not_positive),
    ("retry", text(max_size=3) | st.integers() | st.lists(st.none(), max_size=2) | st.booleans()),
]
_BAD_RETRY = [
    # Not integral floats: 2.0 is an integer to JSON Schema, though not to the loader.
    ("max_attempts", st.integers(max_value=0) | st.floats().filter(lambda f: not f.is_integer()) | text(max_size=2)),
    ("max_attempts", st.booleans()),
    ("delay", st.floats(max_value=-1e-3) | st.integers(max_value=-1) | text(max_size=2) | st.booleans()),
    ("backoff", st.floats(max_value=0.999) | st.integers(max_value=0) | text(max_size=2)),
    ("max_delay", st.floats(max_value=-1e-3) | text(max_size=2) | st.booleans()),
    ("jitter", st.floats(min_value=1.001) | st.floats(max_value=-1e-3) | text(max_size=2)),
    ("on", text(max_size=3) | st.integers() | st.lists(st.integers(), min_size=1, max_size=2)),
    ("unknown-field", st.integers()),
]
