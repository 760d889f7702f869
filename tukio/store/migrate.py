"""Moving unfinished executions to another version of their template, on purpose.

An execution runs to its end on the template version it began with (see
`WorkflowTemplate.version`). `migrate` pins chosen executions to another
version instead: each task record moves to its counterpart in the new
version (same id, or the one `mapping` names). A task that ended (committed:
its outputs are in the journal) must have a counterpart, else the migration
is refused; the record of a task that had not ended is dropped when the new
version has no counterpart (it was running: at-least-once, it would have run
again anyway).

Run it on executions that no engine runs (listed in `Engine.unrecovered`, or
with the engines stopped): `Engine.migrate` checks its own instances; then
`Engine.recover()` resumes them on the new version.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from tukio.errors import MigrationError
from tukio.store.base import UNFINISHED, Store
from tukio.workflow.template import WorkflowTemplate

__all__ = ["migrate", "plan_migration", "target_template"]


def target_template(store: Store, to: WorkflowTemplate | str) -> WorkflowTemplate:
    """The template `to` names: itself, or the version the store keeps under that id.

    Raises:
        UnknownVersionError: `to` is a version id the store does not keep.
        TemplateError: the stored version is not a valid template.
    """
    if isinstance(to, WorkflowTemplate):
        return to
    return WorkflowTemplate.from_dict(store.template_version(to))


def plan_migration(
    report: dict[str, Any], to: WorkflowTemplate, mapping: Mapping[str, str] | None = None
) -> tuple[dict[str, str], list[str]]:
    """Which task records of an execution move where; and why it cannot move, if it cannot.

    Args:
        report: the execution's report from the store.
        to: the version it would run on.
        mapping: old task id -> new task id (a task not named keeps its id).

    Returns:
        The renames (old id -> new id) of the task records kept, and the
        problems (empty when the execution can move).
    """
    mapping = dict(mapping or {})
    exec_info = report.get("exec") or {}
    exec_id = exec_info.get("id")
    where = f"execution {exec_id}"
    problems: list[str] = []
    if exec_info.get("state") != UNFINISHED:
        problems.append(f"{where}: it has ended ({exec_info.get('state')}): there is nothing to move")
    if report.get("id") != to.uid:
        problems.append(f"{where}: it runs template {report.get('id')}, not {to.uid}")
    old_ids = {str(t.get("id")) for t in report.get("tasks", []) if isinstance(t, dict)}
    new_ids = {t.uid for t in to.tasks}
    version = to.version
    for old, new in sorted(mapping.items()):
        if old not in old_ids:
            problems.append(f"{where}: the mapping names task {old!r}, which its version does not have")
        if new not in new_ids:
            problems.append(f"{where}: the mapping moves task {old!r} to {new!r}, not a task of version {version}")
    renames: dict[str, str] = {}
    for task in report.get("tasks", []):
        entry = task.get("exec") if isinstance(task, dict) else None
        if not isinstance(entry, dict):
            continue  # never started: nothing to move
        old = str(task.get("id"))
        new = mapping.get(old, old)
        if new in new_ids:
            if new in renames.values():
                problems.append(f"{where}: two tasks would move to task {new!r}")
            renames[old] = new
        elif entry.get("state") != UNFINISHED:
            problems.append(
                f"{where}: task {old!r} ended ({entry.get('state')}) and has no counterpart in version {version}"
            )
    return renames, problems


def migrate(
    store: Store,
    exec_ids: Iterable[str],
    to: WorkflowTemplate | str,
    mapping: Mapping[str, str] | None = None,
) -> str:
    """Pin unfinished executions to another version of their template.

    Every execution is checked before any moves: when one cannot, none does.

    Args:
        store: the store that keeps them.
        exec_ids: the executions to move.
        to: the version to move them to: a template, or the id of a version
            the store keeps.
        mapping: old task id -> new task id, for tasks renamed in `to`
            (a task not named keeps its id).

    Returns:
        The version id they run on from now on.

    Raises:
        MigrationError: an execution cannot move (unknown, ended, of another
            template, a task that ended with no counterpart, a mapping that
            names unknown tasks): one line per problem.
        UnknownVersionError: `to` is a version id the store does not keep.
        TemplateError: `to` names a stored version that is not valid.
    """
    target = target_template(store, to)
    version = target.version
    plans: list[tuple[str, dict[str, str]]] = []
    problems: list[str] = []
    for exec_id in dict.fromkeys(exec_ids):
        try:
            report = store.load(exec_id)
        except KeyError:
            problems.append(f"execution {exec_id}: not in the store")
            continue
        renames, found = plan_migration(report, target, mapping)
        problems.extend(found)
        plans.append((exec_id, renames))
    if problems:
        raise MigrationError(problems)
    blob = store.serializer.dumps(target.as_dict())
    for exec_id, renames in plans:
        store.repin(exec_id, version, blob, renames)
    return version
