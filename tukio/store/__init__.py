"""Durable journals of workflow executions, and recovery after a crash.

``Engine(store=SQLiteStore("tukio.db"))`` records every workflow and task
transition; ``await engine.recover()`` resumes what a crash interrupted.
"""

from tukio.store.base import ExecutionInfo, JSONSerializer, Serializer, Store
from tukio.store.memory import MemoryStore
from tukio.store.sqlite import SQLiteStore

__all__ = ["ExecutionInfo", "JSONSerializer", "MemoryStore", "SQLiteStore", "Serializer", "Store"]
