"""Durable journals of workflow executions, and recovery after a crash.

``Engine(store=SQLiteStore("tukio.db"))`` records every workflow and task
transition; ``await engine.recover()`` resumes what a crash interrupted.
``PostgresStore`` (``pip install tukio[postgres]``) lets several engines
share one journal (see `tukio.cluster`); it is imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tukio.store.base import ExecutionInfo, JSONSerializer, Serializer, Store
from tukio.store.memory import MemoryStore
from tukio.store.sqlite import SQLiteStore

if TYPE_CHECKING:
    from tukio.store.postgres import PostgresStore

__all__ = ["ExecutionInfo", "JSONSerializer", "MemoryStore", "PostgresStore", "SQLiteStore", "Serializer", "Store"]


def __getattr__(name: str) -> Any:
    # PostgresStore needs asyncpg (an optional extra): import it only when asked for.
    if name == "PostgresStore":
        from tukio.store.postgres import PostgresStore

        return PostgresStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
