"""Workflows: templates, policies and executions."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from tukio.errors import RescueError, TemplateGraphError, WorkflowError, WorkflowRootTaskError
from tukio.policy import Decision, OverrunPolicy, decide
from tukio.workflow.states import WorkflowExecState
from tukio.workflow.template import WorkflowTemplate
from tukio.workflow.workflow import Workflow

__all__ = [
    "OverrunPolicy",
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

    `running` are the running instances of the same template. Under
    'abort-running' they are cancelled; the caller starts the new workflow
    once they are done (as `Engine` does).
    """
    instances = [wf for wf in running or () if not wf.done()]
    locked = sum(1 for wf in instances if wf.lock.locked())
    decision = decide(template.policy, len(instances), locked)
    if decision is Decision.skip:
        return None
    if decision is Decision.abort_then_start:
        for wf in instances:
            wf.cancel()
    return Workflow(template, loop=loop)
