"""What `tukio.manage` asks of a store (`Store.admin`): the filters, the rows, the actions.

`tukio.store._sqladmin` implements it for SQLite and PostgreSQL, `MemoryStore` for itself.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from tukio._report import iso_now

__all__ = ["FAILED_STATES", "Admin", "Filters", "NodeRow", "Row", "now"]

#: The task states that make an execution `failed`.
FAILED_STATES = ("exception", "timeout")


@dataclass(frozen=True)
class Filters:
    """Which executions a listing or a bulk action selects (None: any).

    A state of `FAILED_STATES` also selects the executions with a task that
    ended in it (their workflow may have 'finished').

    Times are ISO 8601 text as the journal writes them (`tukio._report.iso`).
    """

    states: tuple[str, ...] | None = None
    failed: bool | None = None
    template: str | None = None
    version: str | None = None
    node: str | None = None
    since: str | None = None
    until: str | None = None


class Row(NamedTuple):
    """One execution as a listing reads it (`task_error`: its first failed task, "id: error")."""

    exec_id: str
    template_id: str | None
    version: str | None
    state: str
    owner: str | None
    start: str | None
    end: str | None
    error: str | None
    task_error: str | None


class NodeRow(NamedTuple):
    """One node of the store: `expires` in seconds since the epoch."""

    name: str
    epoch: int | None
    expires: float | None
    alive: bool
    owned: int


class Admin(abc.ABC):
    """What `tukio.manage.Manager` asks of a store (see `Store.admin`). Every call may block."""

    @abc.abstractmethod
    def page(self, filters: Filters, limit: int, after: tuple[str, str] | None) -> list[Row]:
        """Up to `limit` executions, newest first, after the ``(start, id)`` key `after`."""

    @abc.abstractmethod
    def matching(self, filters: Filters) -> list[Row]:
        """Every execution `filters` selects, newest first."""

    def counts(self) -> tuple[dict[str, int], int]:
        """The executions by state, and how many failed (the workflow or one of its tasks).

        This default reads every execution; a database counts them itself.
        """
        rows = self.matching(Filters())
        by_state: dict[str, int] = {}
        for r in rows:
            by_state[r.state] = by_state.get(r.state, 0) + 1
        return by_state, len(self.matching(Filters(failed=True)))

    @abc.abstractmethod
    def row(self, exec_id: str) -> Row | None:
        """One execution, or None when the store has no such id."""

    @abc.abstractmethod
    def nodes(self) -> list[NodeRow]:
        """The nodes sharing the store, by name (none for a store of one process)."""

    @abc.abstractmethod
    def cancel(self, exec_id: str) -> str:
        """Cancel an unfinished execution.

        Returns:
            "requested" (its live owner cancels it), "cancelled" (marked in
            the journal), or the state it had ended in (nothing done).
        """

    @abc.abstractmethod
    def resume(self, exec_id: str, rerun: Sequence[str]) -> bool:
        """Make an ended execution unfinished and unowned again, forgetting tasks `rerun`.

        Returns:
            False when it was unfinished meanwhile (nothing done).
        """

    @abc.abstractmethod
    def fork(self, exec_id: str, new_id: str, keep: Sequence[str]) -> None:
        """Write a new unowned unfinished execution `new_id`: `exec_id`'s template and
        trigger, with the records of its tasks `keep` (done, not run again)."""

    @abc.abstractmethod
    def delete(self, exec_ids: Sequence[str]) -> int:
        """Delete executions with their tasks and events; return how many were."""


def now() -> str:
    """The current time as the journal writes it."""
    return iso_now() or ""
