"""The one exception tree of tukio.

Every error tukio raises derives from `TukioError`. Template problems
are collected and raised together as a `TemplateError`; when the
original tukio raised a different builtin for the same problem (``KeyError``
for a missing task name, ``TypeError`` for successors that are not a list...),
the raised error is *also* an instance of that class, so old ``except``
clauses keep working.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any, NamedTuple


class TukioError(Exception):
    """Base class of every error raised by tukio."""

    # Some members of the tree are also KeyErrors, whose str() is a repr.
    __str__ = Exception.__str__


#: How many problems the message of a `TemplateError` spells out; `problems` keeps them all.
SHOWN_PROBLEMS = 20


class TemplateError(TukioError, ValueError):
    """A workflow or task template is invalid; `problems` lists each one.

    Each problem is a string that starts with where it is, e.g.
    ``tasks[2].timeout: must be a positive number``. The message shows the
    first `SHOWN_PROBLEMS` and counts the others.
    """

    def __init__(self, problems: list[str] | str) -> None:
        if isinstance(problems, str):
            problems = [problems]
        self.problems: list[str] = list(problems)
        shown = "; ".join(self.problems[:SHOWN_PROBLEMS]) or "invalid template"
        hidden = len(self.problems) - SHOWN_PROBLEMS
        if hidden > 0:
            shown += f"; and {hidden} more problem{'s' if hidden > 1 else ''} (see .problems)"
        super().__init__(shown)


class DAGValidationError(TemplateError):
    """A graph is not a directed acyclic graph (it has a cycle)."""


class UnknownTaskName(TemplateError, KeyError):
    """No task is registered under that name."""


class WorkflowError(TukioError):
    """Base class of the errors about workflows."""


class WorkflowRootTaskError(WorkflowError, TemplateError):
    """A workflow template does not have exactly one root task."""


class TemplateGraphError(WorkflowError, TemplateError, KeyError):
    """The graph of a workflow template names a task id that does not exist."""


class RescueError(WorkflowError):
    """A workflow cannot be rebuilt from the report it was given."""


class SkipTask(Exception):
    """Raise it inside a task to skip it: its inputs flow to its successors."""

    def __init__(self, reason: str | None = None) -> None:
        super().__init__(reason or "task skipped")
        self.reason = reason


class TukioTaskError(TukioError):
    """Raise it from a task to fail it while keeping `outputs` in its report."""

    def __init__(self, outputs: Any = None, message: str | None = None) -> None:
        super().__init__(message or "task failed")
        self.outputs = outputs


class JournalError(TukioError):
    """The journal of an engine could not record something (see `tukio.store`)."""


class UnknownExecution(TukioError, KeyError):
    """No execution of the store has this id (see `tukio.manage`); the message names it.

    Args:
        exec_id: the id asked for.
    """

    def __init__(self, exec_id: str) -> None:
        super().__init__(f"no execution {exec_id!r} in the store")
        self.exec_id = exec_id

    def __str__(self) -> str:
        return str(self.args[0])  # (not KeyError's quoted repr of it)


class DamagedRecordError(JournalError, ValueError):
    """A store holds a record of an execution that cannot be read back.

    Args:
        exec_id: the execution whose record is damaged.
        problem: which field, and what is wrong with it.
    """

    def __init__(self, exec_id: str, problem: str) -> None:
        super().__init__(f"execution {exec_id}: {problem}")
        self.exec_id = exec_id
        self.problem = problem


class UnknownVersionError(TukioError, KeyError):
    """No template version has that id in the store.

    Args:
        version: the version id asked for.
    """

    def __init__(self, version: str) -> None:
        super().__init__(f"no template version {version!r} in the store")
        self.version = version

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class MigrationError(TukioError, ValueError):
    """Executions cannot be moved to another template version (see `Engine.migrate`).

    Args:
        problems: one line per execution that cannot move, saying why.
    """

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class FlowError(TukioError, ValueError):
    """A trigger cannot be admitted: its data lacks the template's ``concurrency_key``, or an argument is bad."""


class CronError(TukioError, ValueError):
    """A cron expression cannot be parsed; the message says where and why.

    Args:
        expression: the expression as given.
        reason: what is wrong with it.
    """

    def __init__(self, expression: str, reason: str) -> None:
        super().__init__(f"cannot parse {expression!r}: {reason}")
        self.expression = expression
        self.reason = reason


class Problem(NamedTuple):
    """One problem found in a template: where, what, and the legacy class."""

    where: str
    message: str
    kind: type[Exception] = TemplateError

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@functools.cache
def _error_class(kinds: frozenset[type[Exception]]) -> type[TemplateError]:
    # Drop the kinds already implied by another one, keep a stable order.
    needed = [k for k in kinds if not any(o is not k and issubclass(o, k) for o in kinds)]
    # tukio's classes first, so their __init__ (which keeps `problems`) wins.
    needed.sort(key=lambda k: (not issubclass(k, TukioError), k.__module__, k.__qualname__))
    if not any(issubclass(k, TemplateError) for k in needed):
        needed.insert(0, TemplateError)
    if len(needed) == 1:
        only = needed[0]
        assert issubclass(only, TemplateError)
        return only
    # The name stays TemplateError so tracebacks read the same whatever mix.
    return type(
        "TemplateError",
        tuple(needed),
        {
            "__module__": __name__,
            "__qualname__": "TemplateError",
            "__init__": TemplateError.__init__,
            "__str__": Exception.__str__,
        },
    )


def template_error(problems: Iterable[Problem]) -> TemplateError:
    """Build the single error that reports every problem at once.

    The returned error is an instance of `TemplateError` and of the class of
    every problem (`KeyError`, `DAGValidationError`, ...).
    """
    found = list(problems)
    cls = _error_class(frozenset(p.kind for p in found))
    return cls([str(p) for p in found])
