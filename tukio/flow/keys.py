"""Idempotency keys: the execution id a key gives, and the keys seen recently.

A trigger with a key runs under the id `key_exec_id(template_id, key)`, so
the same key always names the same execution, in this process, after a
restart, and in a store. `KeyRegistry` remembers the executions of recent
keys in memory: while they run, and for `retention` seconds after they end.
"""

from __future__ import annotations

import uuid
from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tukio.workflow.workflow import Workflow

__all__ = ["DEFAULT_RETENTION", "KeyRegistry", "key_exec_id"]

#: Seconds an ended execution is remembered by its key in memory (a day).
DEFAULT_RETENTION = 86_400.0
_NAMESPACE = uuid.UUID("8a4b7c1e-5f0d-4c59-9e8e-1d2f3a4b5c6d")


def key_exec_id(template_id: str, key: str) -> str:
    """The execution id of the trigger of `template_id` with idempotency key `key`.

    Keys are scoped by template: the same key on two templates gives two ids.
    """
    return str(uuid.uuid5(_NAMESPACE, f"{template_id}\x00{key}"))


class KeyRegistry:
    """The executions of recent idempotency keys, by execution id.

    Args:
        retention: seconds an ended execution stays known by its key.
    """

    def __init__(self, retention: float = DEFAULT_RETENTION) -> None:
        if not retention >= 0:
            raise ValueError(f"retention must be >= 0 seconds, got {retention}")
        self.retention = retention
        self._known: dict[str, Workflow] = {}
        # (expiry, exec id, workflow): ends come in time order, so expiries do too.
        self._ended: deque[tuple[float, str, Workflow]] = deque()

    def __len__(self) -> int:
        return len(self._known)

    def get(self, exec_id: str, now: float) -> Workflow | None:
        """The execution known under `exec_id`, or None (forgetting those past retention)."""
        self.forget(now)
        return self._known.get(exec_id)

    def add(self, workflow: Workflow) -> None:
        """Remember `workflow` under its id until `retention` after it ends (see `ended`)."""
        self._known[workflow.uid] = workflow

    def ended(self, workflow: Workflow, now: float) -> None:
        """Start the retention of an execution that ended at `now`."""
        self._ended.append((now + self.retention, workflow.uid, workflow))
        self.forget(now)

    def forget(self, now: float) -> None:
        """Drop the executions whose retention is over."""
        ended = self._ended
        while ended and ended[0][0] <= now:
            _, exec_id, workflow = ended.popleft()
            if self._known.get(exec_id) is workflow:
                del self._known[exec_id]
