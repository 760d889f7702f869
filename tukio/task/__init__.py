"""Tasks: registration, holders, the tukio task class and factory, templates."""

from tukio.errors import UnknownTaskName
from tukio.task.factory import TaskExecState, new_task, tukio_factory
from tukio.task.holder import TaskHolder
from tukio.task.join import JoinTask
from tukio.task.registry import TaskRegistry, register
from tukio.task.task import TukioTask, TukioTaskError
from tukio.task.template import TaskTemplate
from tukio.utils import TimeoutHandle  # noqa: F401 - the original exported it here

__all__ = [
    "JoinTask",
    "TaskExecState",
    "TaskHolder",
    "TaskRegistry",
    "TaskTemplate",
    "TukioTask",
    "TukioTaskError",
    "UnknownTaskName",
    "new_task",
    "register",
    "tukio_factory",
]
