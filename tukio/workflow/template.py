"""`WorkflowTemplate`: a single-root DAG of task templates, loaded from JSON."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import uuid
from dataclasses import dataclass
from typing import Any

from tukio._validation import REPORT_KEY, WORKFLOW_KEYS, check_workflow, extensions, name_problems, parse_json
from tukio.dag import DAG
from tukio.errors import Problem, TemplateError, WorkflowRootTaskError, template_error
from tukio.flow.limits import FLOW_KEYS, RateSpec, ScheduleSpec, check_flow
from tukio.policy import OverrunPolicy
from tukio.task.registry import TaskRegistry
from tukio.task.template import TaskTemplate
from tukio.utils import Listen

__all__ = ["VERSION_LENGTH", "Plan", "WorkflowTemplate", "version_of"]

#: How many hex digits of the sha256 of a template's canonical JSON make its version id.
VERSION_LENGTH = 16


@dataclass(frozen=True)
class Plan:
    """What a running workflow needs from its template, computed once.

    `error` is set instead of `root` when the template has not exactly one root.
    """

    root: TaskTemplate | None
    error: WorkflowRootTaskError | None
    by_id: dict[str, TaskTemplate]
    successors: dict[str, tuple[str, ...]]
    parents: dict[str, tuple[str, ...]]


class WorkflowTemplate:
    """The description of a workflow: tasks, graph, policy, topics, timeout.

    Args:
        uid: the template id (a uuid4 string when None).
        policy: an `OverrunPolicy` or its name (the default when None).
        topics: None: triggered by data on any topic or none; ``[]``: never
            triggered by data; a list: by data on those topics only.
        timeout: seconds before a running instance is cancelled (None: never).
        schema: version of the JSON format (1).
        title: a human-readable title.
        extra: extension keys (your own metadata): kept, and returned by
            `as_dict` (and in reports) after the others.
        concurrency: at most this many executions run at once; further
            triggers wait in the engine's queue (None: no limit). See
            `tukio.flow` and the flow-control guide.
        concurrency_key: a top-level key of the trigger data: the
            `concurrency` limit applies per distinct value (needs `concurrency`).
        rate: ``{"limit": N, "period": seconds}``: at most N starts in any
            `period` seconds.
        schedule: ``{"cron": "...", "timezone": "UTC", "catch_up": "none",
            "data": {...}}``: the engine fires the template at each tick.

    The four flow-control settings are plain JSON values, checked by
    `validate` (and `from_dict`); set them as attributes to override a JSON
    template from Python.

    Raises:
        ValueError: unknown policy, or an `extra` key that tukio uses.
        TypeError: `topics` is neither None nor a list.
    """

    def __init__(
        self,
        uid: str | None = None,
        policy: OverrunPolicy | str | None = None,
        topics: list[str] | None = None,
        timeout: float | None = None,
        schema: int | None = None,
        title: str | None = None,
        *,
        extra: dict[str, Any] | None = None,
        concurrency: int | None = None,
        concurrency_key: str | None = None,
        rate: RateSpec | None = None,
        schedule: ScheduleSpec | None = None,
    ) -> None:
        clash = sorted(set(extra or ()) & {*WORKFLOW_KEYS, REPORT_KEY})
        if clash:
            raise ValueError(f"extension keys must not be keys tukio uses: {', '.join(clash)}")
        self.uid = uid if uid is not None else str(uuid.uuid4())
        self.title = title
        self.policy = OverrunPolicy.get(policy)
        Listen.get(topics)
        self.topics = topics
        self.timeout = timeout
        self.schema = schema if schema is not None else 1
        self.extra: dict[str, Any] = dict(extra) if extra else {}
        self.concurrency = concurrency
        self.concurrency_key = concurrency_key
        self.rate = rate
        self.schedule = schedule
        self.dag: DAG[TaskTemplate] = DAG()
        self._plan: Plan | None = None
        self._version: tuple[Plan, str] | None = None

    # -- structure ---------------------------------------------------------
    @property
    def tasks(self) -> list[TaskTemplate]:
        """The task templates, in the order they were added."""
        return list(self.dag.graph)

    @property
    def listen(self) -> Listen:
        """Which data triggers the workflow, derived from `topics`."""
        return Listen.get(self.topics)

    def add(self, task_template: TaskTemplate) -> None:
        """Add a task template.

        Raises:
            TypeError: it is not a `TaskTemplate`.
            ValueError: it is already in the template.
        """
        if not isinstance(task_template, TaskTemplate):
            raise TypeError(f"expected a TaskTemplate, got {type(task_template).__name__}")
        if any(t.uid == task_template.uid for t in self.dag.graph):
            raise ValueError(f"a task with id {task_template.uid!r} is already in the template")
        self.dag.add_node(task_template)
        self._plan = None

    def delete(self, task_template: TaskTemplate) -> None:
        """Remove a task template and its edges.

        Raises:
            KeyError: it is not in the template.
        """
        self.dag.delete_node(task_template)
        self._plan = None

    def link(self, up: TaskTemplate, down: TaskTemplate) -> None:
        """Make `down` a successor of `up`.

        Raises:
            KeyError: a task is not in the template.
            DAGValidationError: the link would close a cycle.
        """
        self.dag.add_edge(up, down)
        self._plan = None

    def unlink(self, up: TaskTemplate, down: TaskTemplate) -> None:
        """Remove the link from `up` to `down`.

        Raises:
            KeyError: there is no such link.
        """
        self.dag.delete_edge(up, down)
        self._plan = None

    def root(self) -> TaskTemplate:
        """Return the root task template.

        Raises:
            WorkflowRootTaskError: the template has zero or several roots.
        """
        roots = self.dag.root_nodes()
        if len(roots) != 1:
            raise WorkflowRootTaskError([self._root_problem(roots)])
        return roots[0]

    @staticmethod
    def _root_problem(roots: list[TaskTemplate]) -> str:
        if not roots:
            return "graph: no root task, expected 1"
        return f"graph: {len(roots)} root tasks ({', '.join(t.uid for t in roots)}), expected 1"

    def validate(self) -> bool:
        """Check the template can run: one root, every task name registered, flow control valid.

        Returns:
            True (as the original did), when the template is valid.

        Raises:
            WorkflowRootTaskError: zero or several roots (naming them).
            UnknownTaskName: naming every unregistered task name.
            TemplateError: both at once (an instance of both classes
                above), or a flow-control setting is invalid.
        """
        problems = [Problem(where, message, ValueError) for where, message in check_flow(self.flow_settings())]
        roots = self.dag.root_nodes()
        if len(roots) != 1:
            where, message = self._root_problem(roots).split(": ", 1)
            problems.append(Problem(where, message, WorkflowRootTaskError))
        problems += name_problems([task.name for task in self.dag.graph], TaskRegistry)
        if problems:
            raise template_error(problems)
        self._plan = None
        return True

    def plan(self) -> Plan:
        """Return the execution plan (cached until the template changes)."""
        plan = self._plan
        if plan is None:
            roots = self.dag.root_nodes()
            order = {t: i for i, t in enumerate(self.dag.graph)}
            successors = {
                t.uid: tuple(s.uid for s in sorted(succs, key=order.__getitem__)) for t, succs in self.dag.graph.items()
            }
            parents: dict[str, list[str]] = {t.uid: [] for t in self.dag.graph}
            for uid, succs in successors.items():
                for succ in succs:
                    parents[succ].append(uid)
            error = None if len(roots) == 1 else WorkflowRootTaskError([self._root_problem(roots)])
            plan = self._plan = Plan(
                root=roots[0] if len(roots) == 1 else None,
                error=error,
                by_id={t.uid: t for t in self.dag.graph},
                successors=successors,
                parents={uid: tuple(p) for uid, p in parents.items()},
            )
        return plan

    @property
    def version(self) -> str:
        """The id of this exact definition: a hash of the template's canonical JSON.

        It covers everything `as_dict` returns (id, title, policy, topics,
        timeout, schema, extension keys, every task with its name, config,
        topics, timeout and retry, and the graph), and nothing of how the
        JSON was written: key order, whitespace and the order of the tasks
        do not change it. Two templates with the same version run the same
        way; an execution is pinned to the version it began with (see
        "Changing workflows safely" in the docs).

        Computed when first asked, then kept until the graph changes or
        `validate()` runs (`Engine.load` validates): after changing a field
        in place, call `validate()` before reading it again.
        """
        plan = self.plan()
        cached = self._version
        if cached is None or cached[0] is not plan:
            cached = self._version = (plan, version_of(self.as_dict()))
        return cached[1]

    def flow_settings(self) -> dict[str, Any]:
        """The flow-control settings that are set, as in the JSON (``{}`` when none is)."""
        values = (self.concurrency, self.concurrency_key, self.rate, self.schedule)
        return {key: value for key, value in zip(FLOW_KEYS, values, strict=True) if value is not None}

    # -- (de)serialisation -------------------------------------------------
    @classmethod
    def from_dict(cls, wf_dict: dict[str, Any]) -> WorkflowTemplate:
        """Build a template from its JSON object.

        Checks the structure and reports every problem at once; zero or
        several roots and unregistered names are accepted (see `validate`).
        Unknown keys, of the workflow and of its tasks, are kept in `extra`
        (but 'exec', which a report adds).

        Raises:
            TemplateError: listing each problem with where it is; also an
                instance of what the original tukio raised for those problems
                (`KeyError`, `TypeError`, `ValueError`, `DAGValidationError`,
                `TemplateGraphError`).
        """
        problems = check_workflow(wf_dict)
        if problems:
            raise template_error(problems)
        template = cls(
            uid=wf_dict.get("id"),
            policy=wf_dict.get("policy"),
            topics=list(wf_dict["topics"]) if wf_dict.get("topics") is not None else None,
            timeout=wf_dict.get("timeout"),
            schema=wf_dict.get("schema"),
            title=wf_dict.get("title"),
            extra=extensions(wf_dict, WORKFLOW_KEYS),
            **{key: copy.deepcopy(wf_dict[key]) for key in FLOW_KEYS if wf_dict.get(key) is not None},
        )
        by_id: dict[str, TaskTemplate] = {}
        for task_dict in wf_dict.get("tasks", []):
            task = TaskTemplate.build(task_dict)
            template.dag.add_node(task)
            by_id[task.uid] = task
        # The checks above ruled out unknown ids and cycles: link directly.
        for uid, successors in wf_dict.get("graph", {}).items():
            template.dag.graph[by_id[uid]].update(by_id[s] for s in successors)
        return template

    @classmethod
    def from_json(cls, text: str | bytes) -> WorkflowTemplate:
        """Build a template from JSON text.

        Raises:
            TemplateError: the text is not JSON (naming line and column), nests
                deeper than 100 levels, holds an integer too long to convert,
                or the template is invalid.
        """
        try:
            data = parse_json(text)
        except (TypeError, ValueError) as exc:
            raise TemplateError(f"json: {exc}") from None
        return cls.from_dict(data)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> WorkflowTemplate:
        """Build a template from a JSON file.

        Raises:
            OSError: the file cannot be read.
            TemplateError: as `from_json`.
        """
        with open(path, "rb") as f:
            return cls.from_json(f.read())

    def as_dict(self) -> dict[str, Any]:
        """Return the JSON object of the template (`from_dict` round-trips it), extension keys last."""
        plan = self.plan()
        d = {
            "id": self.uid,
            "title": self.title,
            "policy": self.policy.value,
            "topics": self.topics,
            "timeout": self.timeout,
            "schema": self.schema,
            "tasks": [task.as_dict() for task in self.dag.graph],
            "graph": {uid: list(succs) for uid, succs in plan.successors.items()},
        }
        d.update(copy.deepcopy(self.flow_settings()))
        d.update(self.extra)
        return d

    def copy(self) -> WorkflowTemplate:
        """Return a deep copy with every field (same ids)."""
        new = WorkflowTemplate(
            uid=self.uid,
            policy=self.policy,
            topics=copy.copy(self.topics),
            timeout=self.timeout,
            schema=self.schema,
            title=self.title,
            extra=copy.deepcopy(self.extra),
            **copy.deepcopy(self.flow_settings()),
        )
        clones = {task: task.copy() for task in self.dag.graph}
        for task, succs in self.dag.graph.items():
            new.dag.graph[clones[task]] = {clones[s] for s in succs}
        return new

    def __repr__(self) -> str:
        return f"<WorkflowTemplate uid={self.uid!r} title={self.title!r} tasks={len(self.dag)}>"


def version_of(template: dict[str, Any]) -> str:
    """The version id of a template's JSON object (see `WorkflowTemplate.version`).

    The tasks are taken in the order of their ids and each successor list
    sorted, so that only what the template means counts.
    """
    canonical = dict(template)
    canonical.pop(REPORT_KEY, None)
    tasks = canonical.get("tasks")
    if isinstance(tasks, list):
        canonical["tasks"] = sorted(
            ({k: v for k, v in t.items() if k != REPORT_KEY} if isinstance(t, dict) else t for t in tasks),
            key=lambda t: str(t.get("id")) if isinstance(t, dict) else "",
        )
    graph = canonical.get("graph")
    if isinstance(graph, dict):
        canonical["graph"] = {k: sorted(map(str, v)) if isinstance(v, list) else v for k, v in graph.items()}
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:VERSION_LENGTH]
