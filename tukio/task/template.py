"""`TaskTemplate`: one task of a workflow template."""

from __future__ import annotations

import asyncio
import copy
import uuid
from typing import TYPE_CHECKING, Any

from tukio._validation import REPORT_KEY, TASK_KEYS, check_task, extensions
from tukio.errors import template_error
from tukio.retry import RetryPolicy
from tukio.task._start import start_task
from tukio.utils import Listen

if TYPE_CHECKING:
    from tukio.task.task import TukioTask
    from tukio.workflow.workflow import Workflow

__all__ = ["TaskTemplate"]

_NO_TOPICS: list[str] = []


class TaskTemplate:
    """The description of a task: registered name, id, config, timeout, topics.

    Args:
        name: the registered task name.
        uid: the task id in its workflow (a uuid4 string when None).
        config: passed to the task holder (``{}`` when None).
        timeout: seconds before the task is ended as timed out (None: never).
        topics: broker topics the running task receives events from: None for
            every topic, ``[]`` (the default) for none.
        retry: an optional `RetryPolicy`.
        extra: extension keys (your own metadata): kept, and returned by
            `as_dict` after the others.

    Raises:
        TypeError: `topics` is neither None nor a list.
        ValueError: an `extra` key is one tukio uses.
    """

    def __init__(
        self,
        name: str,
        uid: str | None = None,
        config: dict[str, Any] | None = None,
        timeout: float | None = None,
        topics: list[str] | None = _NO_TOPICS,
        retry: RetryPolicy | None = None,
        *,
        extra: dict[str, Any] | None = None,
    ) -> None:
        clash = sorted(set(extra or ()) & {*TASK_KEYS, REPORT_KEY})
        if clash:
            raise ValueError(f"extension keys must not be keys tukio uses: {', '.join(clash)}")
        self.name = name
        self.uid = uid if uid is not None else str(uuid.uuid4())
        self.config: dict[str, Any] = config if config is not None else {}
        self.timeout = timeout
        Listen.get(topics)
        self.topics = list(topics) if topics is not None else None
        self.retry = retry
        self.extra: dict[str, Any] = dict(extra) if extra else {}

    @property
    def listen(self) -> Listen:
        """What the running task listens to, derived from `topics`."""
        return Listen.get(self.topics)

    def new_task(
        self, data: Any, loop: asyncio.AbstractEventLoop | None = None, workflow: Workflow | None = None
    ) -> TukioTask:
        """Create and schedule a task from this template with `data`.

        Raises:
            UnknownTaskName: the template's name is not registered.
            Exception: whatever the holder's ``__init__`` raises.
        """
        return start_task(self.name, data, config=self.config, loop=loop, template=self, workflow=workflow)

    @classmethod
    def from_dict(cls, task_dict: dict[str, Any]) -> TaskTemplate:
        """Build a template from ``{'id','name','config','topics','timeout'}``.

        Only 'name' is required; a missing 'topics' means ``[]`` (listen to
        nothing); unknown keys are kept in `extra` (but 'exec', which a report
        adds).

        Raises:
            TemplateError: listing every problem; it is also a `KeyError` when
                'name' is missing and a `TypeError` for a wrong type.
        """
        problems = check_task(task_dict, "task.")
        if problems:
            raise template_error(problems)
        return cls.build(task_dict)

    @classmethod
    def build(cls, task_dict: dict[str, Any]) -> TaskTemplate:
        """Build from a dict already checked by `check_task` (no checks here)."""
        retry = None
        if task_dict.get("retry") is not None:
            retry = RetryPolicy.from_dict(task_dict["retry"])
        return cls(
            task_dict["name"],
            uid=task_dict.get("id"),
            config=copy.deepcopy(dict(task_dict.get("config") or {})),
            timeout=task_dict.get("timeout"),
            topics=task_dict.get("topics", []),
            retry=retry,
            extra=extensions(task_dict, TASK_KEYS),
        )

    def as_dict(self) -> dict[str, Any]:
        """Return ``{'id','name','config','topics','timeout'}``, then 'retry' and the extension keys when set."""
        d: dict[str, Any] = {
            "id": self.uid,
            "name": self.name,
            "config": self.config,
            "topics": self.topics,
            "timeout": self.timeout,
        }
        if self.retry is not None:
            d["retry"] = self.retry.as_dict()
        d.update(self.extra)
        return d

    def copy(self) -> TaskTemplate:
        """Return a deep copy (same uid)."""
        return TaskTemplate(
            self.name,
            uid=self.uid,
            config=copy.deepcopy(self.config),
            timeout=self.timeout,
            topics=self.topics,
            retry=self.retry,
            extra=copy.deepcopy(self.extra),
        )

    def __repr__(self) -> str:
        return f"<TaskTemplate name={self.name!r} uid={self.uid!r}>"
