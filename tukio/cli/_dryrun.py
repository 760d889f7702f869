"""``tukio run --dry-run``: resolve and build everything, print the plan, run nothing."""

from __future__ import annotations

from typing import Any

from tukio._report import describe_error
from tukio.cli._common import EXIT_OK, InputError, table
from tukio.graph import topological_order
from tukio.task.registry import TaskRegistry
from tukio.task.template import TaskTemplate
from tukio.workflow.template import WorkflowTemplate

__all__ = ["dry_run"]


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:g} s"


def _build(task: TaskTemplate) -> str:
    """Resolve the task's name and build its holder; return what it is.

    Raises:
        Exception: whatever the holder's ``__init__`` raises.
    """
    klass, coro_fn = TaskRegistry.get(task.name)
    if klass is None:
        return f"function {coro_fn.__qualname__}"
    klass(task.config)
    return f"holder {klass.__qualname__}.{coro_fn.__name__}"


def _listens(topics: list[str] | None) -> str:
    if topics is None:
        return "any topic"
    return ", ".join(topics) if topics else "no topic"


def dry_run(template: WorkflowTemplate, path: str, data: dict[str, Any], topic: str | None) -> int:
    """Print the execution plan of `template` after building every task holder.

    The template must already be validated (one root, names registered).

    Raises:
        InputError: a holder could not be built with its config (every one listed).
    """
    order = topological_order(template)
    kinds: dict[str, str] = {}
    failures: list[str] = []
    for task in order:
        try:
            kinds[task.uid] = _build(task)
        except Exception as exc:
            failures.append(f"{path}: task {task.uid} ({task.name}): cannot build: {describe_error(exc)}")
    if failures:
        raise InputError(f"{path}: task holders cannot be built", failures)
    plan = template.plan()
    if topic is not None and template.topics is not None and topic not in template.topics:
        raise InputError(f"{path}: workflow {template.uid} is not triggered by data on topic {topic!r}")
    title = f" ({template.title})" if template.title else ""
    print(f"dry run of workflow {template.uid}{title}")
    print(f"  policy: {template.policy.value}; timeout: {_seconds(template.timeout)}; ", end="")
    print(f"triggered by: {_listens(template.topics)}")
    print(f"  data: {data!r}" + (f" on topic {topic!r}" if topic is not None else ""))
    rows = []
    for i, task in enumerate(order, 1):
        retry = task.retry
        rows.append(
            [
                str(i),
                task.uid,
                task.name,
                kinds[task.uid],
                _seconds(task.timeout),
                f"{retry.max_attempts} attempts" if retry is not None and retry.max_attempts > 1 else "-",
                ", ".join(plan.successors[task.uid]) or "-",
            ]
        )
    for line in table(["#", "TASK", "NAME", "RUNS", "TIMEOUT", "RETRY", "THEN"], rows):
        print(f"  {line}")
    count = len(order)
    print(f"{count} task{'s' if count != 1 else ''} resolved and built; no task was run")
    return EXIT_OK
