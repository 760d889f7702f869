"""tukio: an event-driven workflow engine built on asyncio.

Coroutines registered with ``@register('name')`` become workflow tasks;
workflows are single-root DAGs of tasks described in JSON; an `Engine` starts
them when data arrives and a `Broker` dispatches events by topic.
``tukio.dumps_report(workflow.report())`` gives a report as JSON text.
"""

from tukio.broker import EXEC_TOPIC, Broker, get_broker
from tukio.dag import DAG, DAGValidationError
from tukio.engine import Engine
from tukio.errors import (
    RescueError,
    TemplateError,
    TemplateGraphError,
    TukioError,
    UnknownTaskName,
    WorkflowError,
    WorkflowRootTaskError,
)
from tukio.event import Event, EventSource
from tukio.policy import OverrunPolicy
from tukio.report_json import dumps_report
from tukio.retry import RetryPolicy
from tukio.selector import WorkflowSelector
from tukio.task import (
    JoinTask,
    TaskHolder,
    TaskRegistry,
    TaskTemplate,
    TukioTask,
    TukioTaskError,
    new_task,
    register,
    tukio_factory,
)
from tukio.utils import FutureState, SkipTask
from tukio.workflow import Workflow, WorkflowTemplate

__version__ = "2.0.0"

__all__ = [
    "DAG",
    "EXEC_TOPIC",
    "Broker",
    "DAGValidationError",
    "Engine",
    "Event",
    "EventSource",
    "FutureState",
    "JoinTask",
    "OverrunPolicy",
    "RescueError",
    "RetryPolicy",
    "SkipTask",
    "TaskHolder",
    "TaskRegistry",
    "TaskTemplate",
    "TemplateError",
    "TemplateGraphError",
    "TukioError",
    "TukioTask",
    "TukioTaskError",
    "UnknownTaskName",
    "Workflow",
    "WorkflowError",
    "WorkflowRootTaskError",
    "WorkflowSelector",
    "WorkflowTemplate",
    "__version__",
    "dumps_report",
    "get_broker",
    "new_task",
    "register",
    "tukio_factory",
]
