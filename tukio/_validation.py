"""The one place where workflow and task templates (as dicts) are checked.

Every check appends a `Problem` naming where it is; callers raise them all
at once with `tukio.errors.template_error`.
"""

from __future__ import annotations

import copy
import difflib
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from tukio.dag import describe_cycle, find_cycle
from tukio.errors import DAGValidationError, Problem, TemplateGraphError, UnknownTaskName
from tukio.flow.limits import FLOW_KEYS, check_flow
from tukio.policy import OverrunPolicy

TASK_KEYS = ("id", "name", "config", "topics", "timeout", "retry")
WORKFLOW_KEYS = ("id", "title", "policy", "topics", "timeout", "schema", "tasks", "graph", *FLOW_KEYS)
# What a report adds to a template: never kept as an extension key.
REPORT_KEY = "exec"


def extensions(d: Mapping[str, Any], known: tuple[str, ...]) -> dict[str, Any]:
    """The keys of a template dict that tukio does not use (a deep copy), to be kept as they are.

    The README invites templates to carry their own metadata; 'exec' (what a
    report adds) is left out, so that a report read back as a template gives
    the template.
    """
    return {key: copy.deepcopy(value) for key, value in d.items() if key not in known and key != REPORT_KEY}


#: How deeply lists and objects may nest in a task's config and in JSON read
#: from files; deeper values would exhaust the stack when copied.
MAX_DEPTH = 100
_TOO_DEEP = f"nested deeper than {MAX_DEPTH} levels"


def too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """True when lists and dicts nest in `value` more than `limit` levels (checked without recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping):
            children: Any = item.values()
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def parse_json(text: str | bytes) -> Any:
    """Parse JSON text as tukio reads templates and data.

    Raises:
        ValueError: why, in one line: where the syntax is wrong, that it
            nests deeper than `MAX_DEPTH` levels, that a number is too long
            to convert, or that the bytes are not UTF-8.
        TypeError: `text` is neither str nor bytes.
    """
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise ValueError(_TOO_DEEP) from None
    except ValueError as exc:  # bytes that are not UTF-8, or an integer of thousands of digits
        raise ValueError(str(exc).split("; ")[0]) from None
    if too_deep(value):
        raise ValueError(_TOO_DEEP)
    return value


def _type(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _check_optional_str(d: Mapping[str, Any], key: str, where: str, out: list[Problem]) -> None:
    value = d.get(key)
    if value is not None and not isinstance(value, str):
        out.append(Problem(f"{where}{key}", f"must be a string, got {_type(value)}", TypeError))


def _check_topics(d: Mapping[str, Any], where: str, out: list[Problem]) -> None:
    topics = d.get("topics")
    if topics is None:
        return
    if not isinstance(topics, list):
        out.append(Problem(f"{where}topics", f"must be null or a list of strings, got {_type(topics)}", TypeError))
        return
    for i, topic in enumerate(topics):
        if not isinstance(topic, str):
            out.append(Problem(f"{where}topics[{i}]", f"must be a string, got {_type(topic)}", TypeError))


def finite(value: int | float) -> float | None:
    """`value` as a float, or None if it is NaN, infinite or too large for a float."""
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def short_repr(value: Any) -> str:
    """`repr(value)`, cut to 40 characters (an integer too long to write is described)."""
    try:
        text = repr(value)
    except ValueError:  # an integer of more digits than sys.get_int_max_str_digits()
        return f"an integer of {value.bit_length()} bits" if isinstance(value, int) else type(value).__name__
    return text if len(text) <= 40 else f"{text[:37]}..."


def check_timeout(value: Any, where: str, out: list[Problem]) -> None:
    """Check `value` is None or a positive finite number."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        out.append(Problem(where, f"must be a positive number, got {_type(value)}", TypeError))
    elif not (value > 0 and finite(value) is not None):
        out.append(Problem(where, f"must be a positive number, got {short_repr(value)}", ValueError))


def _check_extensions(d: Mapping[str, Any], known: tuple[str, ...], where: str, out: list[Problem]) -> None:
    """Refuse extension keys nested too deeply to be copied (see `extensions`)."""
    for key, value in d.items():
        if key not in known and key != REPORT_KEY and too_deep(value):
            out.append(Problem(f"{where}{key}", _TOO_DEEP, ValueError))


def check_task(d: Any, where: str) -> list[Problem]:
    """Check one task template dict; `where` prefixes locations (``tasks[2].``)."""
    out: list[Problem] = []
    if not isinstance(d, Mapping):
        return [Problem(where.rstrip("."), f"must be an object, got {_type(d)}", TypeError)]
    if "name" not in d:
        out.append(Problem(f"{where}name", "missing (every task needs the name of a registered task)", KeyError))
    elif not isinstance(d["name"], str) or not d["name"]:
        out.append(Problem(f"{where}name", f"must be a non-empty string, got {short_repr(d['name'])}", TypeError))
    _check_optional_str(d, "id", where, out)
    config = d.get("config")
    if config is not None and not isinstance(config, Mapping):
        out.append(Problem(f"{where}config", f"must be an object, got {_type(config)}", TypeError))
    elif too_deep(config):
        out.append(Problem(f"{where}config", _TOO_DEEP, ValueError))
    _check_extensions(d, TASK_KEYS, where, out)
    _check_topics(d, where, out)
    check_timeout(d.get("timeout"), f"{where}timeout", out)
    if d.get("retry") is not None:
        check_retry(d["retry"], f"{where}retry", out)
    return out


def check_workflow(d: Any) -> list[Problem]:
    """Check a workflow template dict: structure, ids, graph and cycles.

    Zero or several roots and unregistered names are *not* problems here
    (see `WorkflowTemplate.validate`).
    """
    if not isinstance(d, Mapping):
        return [Problem("template", f"must be an object, got {_type(d)}", TypeError)]
    out: list[Problem] = []
    _check_optional_str(d, "id", "", out)
    _check_optional_str(d, "title", "", out)
    _check_extensions(d, WORKFLOW_KEYS, "", out)
    policy = d.get("policy")
    if policy is not None:
        try:
            OverrunPolicy.get(policy)
        except (ValueError, TypeError) as exc:
            out.append(Problem("policy", str(exc), ValueError))
    _check_topics(d, "", out)
    check_timeout(d.get("timeout"), "timeout", out)
    schema = d.get("schema")
    if schema is not None and (isinstance(schema, bool) or not isinstance(schema, int) or schema < 1):
        out.append(Problem("schema", f"must be a positive integer, got {short_repr(schema)}", ValueError))
    out.extend(Problem(where, message, ValueError) for where, message in check_flow(d))
    ids = _check_tasks(d.get("tasks", []), out)
    _check_graph(d.get("graph", {}), ids, out)
    return out


def _check_tasks(tasks: Any, out: list[Problem]) -> dict[str, None] | None:
    """Check the task list; return its task ids in order (None if unusable).

    The ids are kept in task order (a dict, not a set) so that a cycle is
    always reported the same way, whatever the hash seed.
    """
    if not isinstance(tasks, list):
        out.append(Problem("tasks", f"must be a list, got {_type(tasks)}", TypeError))
        return None
    ids: dict[str, None] = {}
    for i, task in enumerate(tasks):
        out.extend(check_task(task, f"tasks[{i}]."))
        uid = task.get("id") if isinstance(task, Mapping) else None
        if isinstance(uid, str):
            if uid in ids:
                out.append(Problem(f"tasks[{i}].id", f"duplicate id {uid!r}", ValueError))
            ids[uid] = None
    return ids


def _check_graph(graph: Any, ids: dict[str, None] | None, out: list[Problem]) -> None:
    if not isinstance(graph, Mapping):
        out.append(Problem("graph", f"must be an object, got {_type(graph)}", TypeError))
        return
    clean = True
    for key, successors in graph.items():
        where = f"graph.{key}"
        if ids is not None and key not in ids:
            out.append(Problem(where, f"unknown task id {key!r}", TemplateGraphError))
            clean = False
        if not isinstance(successors, list):
            out.append(Problem(where, f"successors must be a list, got {_type(successors)}", TypeError))
            clean = False
            continue
        for succ in successors:
            if not isinstance(succ, str):
                out.append(Problem(where, f"successor must be a task id string, got {_type(succ)}", TypeError))
                clean = False
            elif ids is not None and succ not in ids:
                out.append(Problem(where, f"unknown task id {succ!r}", TemplateGraphError))
                clean = False
    if clean and ids is not None:
        cycle = find_cycle({key: graph.get(key, []) for key in ids})
        if cycle is not None:
            out.append(Problem("graph", f"cycle {describe_cycle(cycle)}", DAGValidationError))


# -- retry policies (the "retry" object of a task) ------------------------------------------
RETRY_FIELDS = ("max_attempts", "delay", "backoff", "max_delay", "jitter", "on")


def _number(d: Mapping[str, Any], key: str, where: str, out: list[Problem], *, minimum: float, strict: bool) -> None:
    if key not in d:
        return
    value = d[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        out.append(Problem(f"{where}.{key}", f"must be a number, got {type(value).__name__}", TypeError))
    elif finite(value) is None or value < minimum or (strict and value == minimum):
        bound = f"> {minimum}" if strict else f">= {minimum}"
        out.append(Problem(f"{where}.{key}", f"must be {bound}, got {short_repr(value)}", ValueError))


def check_retry(value: Any, where: str, out: list[Problem]) -> None:
    """Check a retry object; append a `Problem` per mistake to `out`."""
    if not isinstance(value, Mapping):
        out.append(Problem(where, f"must be an object, got {type(value).__name__}", TypeError))
        return
    for key in value:
        if key not in RETRY_FIELDS:
            out.append(
                Problem(f"{where}.{key}", f"unknown field (expected one of {', '.join(RETRY_FIELDS)})", ValueError)
            )
    attempts = value.get("max_attempts", 1)
    if isinstance(attempts, bool) or not isinstance(attempts, int):
        out.append(Problem(f"{where}.max_attempts", f"must be an integer, got {type(attempts).__name__}", TypeError))
    elif attempts < 1:
        out.append(Problem(f"{where}.max_attempts", f"must be >= 1, got {attempts}", ValueError))
    _number(value, "delay", where, out, minimum=0, strict=False)
    _number(value, "backoff", where, out, minimum=1, strict=False)
    _number(value, "max_delay", where, out, minimum=0, strict=False)
    _number(value, "jitter", where, out, minimum=0, strict=False)
    jitter = value.get("jitter", 0)
    if isinstance(jitter, (int, float)) and not isinstance(jitter, bool) and jitter > 1:
        out.append(Problem(f"{where}.jitter", f"must be a fraction between 0 and 1, got {jitter!r}", ValueError))
    on = value.get("on")
    if on is None:
        return
    if not isinstance(on, list):
        out.append(
            Problem(f"{where}.on", f"must be a list of exception class names, got {type(on).__name__}", TypeError)
        )
        return
    for i, name in enumerate(on):
        if not isinstance(name, str) or not name:
            out.append(Problem(f"{where}.on[{i}]", f"must be an exception class name, got {name!r}", TypeError))


def name_problems(names: Sequence[Any], registry: Registry) -> list[Problem]:
    """The unregistered task names among `names` (those of ``tasks[0]``, ``tasks[1]``...).

    Each names the closest registered name when one is near ("did you
    mean ..."). Names that are not strings are left to the structure checks.

    Args:
        names: the task names, in the template's order.
        registry: where task names are registered (`TaskRegistry`).
    """
    known: list[str] | None = None
    out: list[Problem] = []
    for i, name in enumerate(names):
        if not isinstance(name, str) or registry.registered(name):
            continue
        if known is None:
            known = list(registry.all())
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.85)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        out.append(Problem(f"tasks[{i}].name", f"unknown task name {name!r}{hint}", UnknownTaskName))
    return out


class Registry(Protocol):
    """What `name_problems` asks of the task registry."""

    def registered(self, name: str) -> bool:
        """True when `name` is registered."""

    def all(self) -> Mapping[str, Any]:
        """Every registered name (the keys)."""
