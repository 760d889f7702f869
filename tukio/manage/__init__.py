"""Manage the executions of a store from any process: list, inspect, cancel, resume, retry, delete.

    from tukio.manage import Manager

    manager = Manager(SQLiteStore("journal.db"))
    page = await manager.list(failed=True)
    detail = await manager.get(page.items[0].id)

Reading needs only the store; actions write to the journal and the engines
sharing the store act on them (see `Manager`).
"""

from tukio.manage._manager import MAX_LIMIT, STATES, Manager
from tukio.manage._model import (
    ExecutionDetail,
    ExecutionSummary,
    NodeInfo,
    Page,
    TaskDetail,
    UnknownExecution,
)

__all__ = [
    "MAX_LIMIT",
    "STATES",
    "ExecutionDetail",
    "ExecutionSummary",
    "Manager",
    "NodeInfo",
    "Page",
    "TaskDetail",
    "UnknownExecution",
]
