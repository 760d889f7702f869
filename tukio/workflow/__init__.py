"""Workflows: templates, policies and executions."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

# Names the original's tukio/workflow.py had in its namespace, which code in
# the wild imports from here (not part of __all__).
from tukio.broker import get_broker, workflow_exec_topics  # noqa: F401
from tukio.dag import DAG  # noqa: F401
from tukio.errors import (
    RescueError,
    TemplateGraphError,
    UnknownTaskName,  # noqa: F401
    WorkflowError,
    WorkflowRootTaskError,
)
from tukio.event import Event, EventSource  # noqa: F401
from tukio.policy import OverrunPolicy
from tukio.task import TaskRegistry, TaskTemplate, TukioTask, TukioTaskError  # noqa: F401
from tukio.utils import FutureState, Listen, SkipTask, TimeoutHandle  # noqa: F401
from tukio.workflow.overrun import admit
from tukio.workflow.states import WorkflowExecState
from tukio.workflow.template import WorkflowTemplate
from tukio.workflow.workflow import Workflow

__all__ = [
    "OverrunPolicy",
    "OverrunPolicyHandler",
    "RescueError",
    "TemplateGraphError",
    "Workflow",
    "WorkflowError",
    "WorkflowExecState",
    "WorkflowRootTaskError",
    "WorkflowTemplate",
    "new_workflow",
]


def new_workflow(
    template: WorkflowTemplate,
    running: Iterable[Workflow] | None = None,
    loop: asyncio.AbstractEventLoop | None = None,
) -> Workflow | None:
    """Return a new, not yet started workflow, or None if the policy says skip.

    `running` are running workflows (as in the original, those of other
    templates may be included: only instances of `template`'s id count).
    Under 'abort-running' they are cancelled, and the new workflow's `run()`
    starts it once they have all ended (as in `Engine`: both go through
    `tukio.workflow.overrun.admit`).
    """
    instances = [wf for wf in running or () if not wf.done() and wf.template.uid == template.uid]
    locked = sum(1 for wf in instances if wf.locked())
    return admit(template, len(instances), locked, instances, lambda tpl: Workflow(tpl, loop=loop))


class OverrunPolicyHandler:
    """The original's policy helper: `new_workflow(running)` under `template`'s policy.

    Args:
        template: the template to make workflows of.
        loop: the loop they run on (the running loop when None).
    """

    __slots__ = ("_loop", "policy", "template")

    def __init__(self, template: WorkflowTemplate, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop
        self.template = template
        self.policy = template.policy

    def new_workflow(self, running: Iterable[Workflow] | None = None) -> Workflow | None:
        """Return a new workflow, or None when the policy says skip (see `new_workflow`)."""
        return new_workflow(self.template, running, loop=self._loop)
