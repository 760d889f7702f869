"""Draw a workflow template as Graphviz DOT or Mermaid, optionally with its run.

Without a report each node shows the task id and its registered name; with a
report (`Workflow.report()`, or the same read back from JSON) each node also
shows how the task ended and how long it took, and is coloured accordingly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tukio._report import parse_time
from tukio.task.template import TaskTemplate
from tukio.workflow.template import WorkflowTemplate

__all__ = [
    "NOT_STARTED",
    "NodeState",
    "format_duration",
    "node_states",
    "run_duration",
    "to_dot",
    "to_mermaid",
    "topological_order",
]

NOT_STARTED = "not started"
"""The state drawn for a task the report shows never started."""


@dataclass(frozen=True)
class _Style:
    fill: str
    stroke: str
    dashed: bool = False


# Keyed by FutureState values, plus NOT_STARTED for tasks the run never reached.
_STYLES: dict[str, _Style] = {
    "finished": _Style("#c8e6c9", "#2e7d32"),
    "exception": _Style("#ffcdd2", "#c62828"),
    "timeout": _Style("#ffe0b2", "#ef6c00"),
    "skipped": _Style("#eceff1", "#607d8b"),
    "cancelled": _Style("#e1bee7", "#6a1b9a"),
    "suspended": _Style("#bbdefb", "#1565c0"),
    "pending": _Style("#fff9c4", "#f9a825"),
    NOT_STARTED: _Style("#ffffff", "#9e9e9e", dashed=True),
}
_UNKNOWN_STYLE = _Style("#ffffff", "#000000")


@dataclass(frozen=True)
class NodeState:
    """How one task of a report ended: its state and duration in seconds (None if unknown)."""

    state: str
    duration: float | None = None

    def describe(self) -> str:
        """``finished, 12 ms``-like text for a node label."""
        if self.duration is None:
            return self.state
        return f"{self.state}, {format_duration(self.duration)}"


def format_duration(seconds: float) -> str:
    """Render a duration for humans: ``850 us``, ``12 ms``, ``1.25 s``, ``2 min 03 s``."""
    if seconds < 0.001:
        return f"{seconds * 1e6:.0f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.0f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"


def _as_template(template: WorkflowTemplate | Mapping[str, Any]) -> WorkflowTemplate:
    if isinstance(template, WorkflowTemplate):
        return template
    return WorkflowTemplate.from_dict(dict(template))


def topological_order(template: WorkflowTemplate) -> list[TaskTemplate]:
    """Return the tasks so that each comes after all its parents.

    Ties keep the order of the template's task list, so the result is stable.
    A template with a cycle cannot be built, so every task is returned.
    """
    plan = template.plan()
    position = {t.uid: i for i, t in enumerate(template.tasks)}
    waiting = {uid: len(parents) for uid, parents in plan.parents.items()}
    ready = sorted((uid for uid, n in waiting.items() if n == 0), key=position.__getitem__)
    order: list[TaskTemplate] = []
    while ready:
        uid = ready.pop(0)
        order.append(plan.by_id[uid])
        freed = []
        for succ in plan.successors[uid]:
            waiting[succ] -= 1
            if waiting[succ] == 0:
                freed.append(succ)
        ready = sorted([*ready, *freed], key=position.__getitem__)
    return order


def node_states(report: Mapping[str, Any]) -> dict[str, NodeState]:
    """Map each task id of `report` to how it ended.

    Args:
        report: a `Workflow.report()`, with datetimes or ISO 8601 strings.

    Returns:
        Task id → `NodeState`; tasks whose ``exec`` is None are `NOT_STARTED`.

    Raises:
        ValueError: `report` is not a workflow report (no list of tasks).
    """
    if not isinstance(report, Mapping) or not isinstance(report.get("tasks"), list):
        raise ValueError("not a workflow report: expected an object with a 'tasks' list")
    states: dict[str, NodeState] = {}
    for entry in report["tasks"]:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("id"), str):
            continue
        run = entry.get("exec")
        if not isinstance(run, Mapping):
            states[entry["id"]] = NodeState(NOT_STARTED)
            continue
        states[entry["id"]] = NodeState(str(run.get("state", "pending")), run_duration(run))
    return states


def run_duration(run: Mapping[str, Any]) -> float | None:
    """Seconds between the 'start' and 'end' of an 'exec' entry (None if either is missing)."""
    start, end = parse_time(run.get("start")), parse_time(run.get("end"))
    if start is None or end is None:
        return None
    try:
        return max((end - start).total_seconds(), 0.0)
    except TypeError:  # one naive, one aware: no duration rather than a crash
        return None


def _lines(task: TaskTemplate, state: NodeState | None) -> list[str]:
    lines = [task.uid]
    if task.name != task.uid:
        lines.append(task.name)
    if state is not None:
        lines.append(state.describe())
    return lines


def _title(template: WorkflowTemplate, report: Mapping[str, Any] | None) -> str:
    title = template.title or template.uid
    run = report.get("exec") if report is not None else None
    if isinstance(run, Mapping) and run.get("state") is not None:
        title = f"{title} (workflow {run['state']})"
    return title


# -- Graphviz ------------------------------------------------------------------------
def _dot_text(text: str) -> str:
    """Escape `text` for the inside of a DOT double-quoted string."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\\n")


def _dot_label(lines: list[str]) -> str:
    # Each line escaped on its own so that only our separators are line breaks.
    return "\\n".join(_dot_text(line) for line in lines)


def to_dot(template: WorkflowTemplate | Mapping[str, Any], report: Mapping[str, Any] | None = None) -> str:
    """Return the workflow's DAG in the Graphviz DOT language.

    Args:
        template: a `WorkflowTemplate` or its JSON object (a report works too).
        report: a `Workflow.report()` of a run of it (datetimes or ISO
            strings); nodes then show their state and duration, coloured.

    Returns:
        DOT source, ready for ``dot -Tsvg``.

    Raises:
        TemplateError: `template` is a dict that is not a valid template.
        ValueError: `report` is not a workflow report.
    """
    tmpl = _as_template(template)
    states = node_states(report) if report is not None else None
    out = [
        f'digraph "{_dot_text(tmpl.uid)}" {{',
        f'  label="{_dot_text(_title(tmpl, report))}";',
        "  labelloc=t;",
        '  fontname="Helvetica";',
        '  node [shape=box, style="rounded,filled", fillcolor="#ffffff", fontname="Helvetica"];',
        '  edge [color="#546e7a"];',
    ]
    for task in tmpl.tasks:
        attrs = [f'label="{_dot_label(_lines(task, states.get(task.uid) if states is not None else None))}"']
        if states is not None:
            state = states.get(task.uid, NodeState(NOT_STARTED))
            style = _STYLES.get(state.state, _UNKNOWN_STYLE)
            attrs.append(f'fillcolor="{style.fill}"')
            attrs.append(f'color="{style.stroke}"')
            if style.dashed:
                attrs.append('style="rounded,filled,dashed"')
        out.append(f'  "{_dot_text(task.uid)}" [{", ".join(attrs)}];')
    plan = tmpl.plan()
    for task in tmpl.tasks:
        for succ in plan.successors[task.uid]:
            out.append(f'  "{_dot_text(task.uid)}" -> "{_dot_text(succ)}";')
    out.append("}")
    return "\n".join(out) + "\n"


# -- Mermaid --------------------------------------------------------------------------
# Mermaid reads "#code;" as a character; '#' itself must go first in the table.
_MERMAID_ESCAPES = {c: f"#{ord(c)};" for c in '#"<>&`'}


def _mermaid_text(text: str) -> str:
    flat = " ".join(text.splitlines()) if "\n" in text or "\r" in text else text
    return "".join(_MERMAID_ESCAPES.get(c, c) for c in flat)


def _mermaid_class(state: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in state) or "unknown"


def to_mermaid(template: WorkflowTemplate | Mapping[str, Any], report: Mapping[str, Any] | None = None) -> str:
    """Return the workflow's DAG as a Mermaid flowchart.

    Node ids are generated (``t0``, ``t1``...), so task ids of any spelling
    are safe; labels carry the real ids.

    Args:
        template: a `WorkflowTemplate` or its JSON object (a report works too).
        report: a `Workflow.report()` of a run of it; nodes then show their
            state and duration, and get a class per state.

    Returns:
        Mermaid source (``flowchart TD``).

    Raises:
        TemplateError: `template` is a dict that is not a valid template.
        ValueError: `report` is not a workflow report.
    """
    tmpl = _as_template(template)
    states = node_states(report) if report is not None else None
    node_id = {task.uid: f"t{i}" for i, task in enumerate(tmpl.tasks)}
    out = [f"%% {_mermaid_text(_title(tmpl, report))}", "flowchart TD"]
    by_class: dict[str, list[str]] = {}
    for task in tmpl.tasks:
        state = states.get(task.uid, NodeState(NOT_STARTED)) if states is not None else None
        label = "<br/>".join(_mermaid_text(line) for line in _lines(task, state))
        out.append(f'  {node_id[task.uid]}["{label}"]')
        if state is not None:
            by_class.setdefault(state.state, []).append(node_id[task.uid])
    plan = tmpl.plan()
    for task in tmpl.tasks:
        for succ in plan.successors[task.uid]:
            out.append(f"  {node_id[task.uid]} --> {node_id[succ]}")
    for state_name, ids in by_class.items():
        style = _STYLES.get(state_name, _UNKNOWN_STYLE)
        css = f"fill:{style.fill},stroke:{style.stroke}"
        if style.dashed:
            css += ",stroke-dasharray:5 5"
        name = _mermaid_class(state_name)
        out.append(f"  classDef {name} {css}")
        out.append(f"  class {','.join(ids)} {name}")
    return "\n".join(out) + "\n"
