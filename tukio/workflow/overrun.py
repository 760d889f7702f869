"""The overrun gate: the one place where a template's policy admits a new workflow.

Both `Engine` and `tukio.workflow.new_workflow` go through `admit`, so every
policy behaves the same whoever starts the workflow. Under 'abort-running'
the running instances are cancelled and the new workflow's `run()` waits
until they have all ended.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import TYPE_CHECKING

from tukio.policy import Decision, decide

if TYPE_CHECKING:
    from tukio.workflow.template import WorkflowTemplate
    from tukio.workflow.workflow import Workflow

__all__ = ["admit"]


def admit(
    template: WorkflowTemplate,
    running: int,
    locked: int,
    instances: Collection[Workflow],
    make: Callable[[WorkflowTemplate], Workflow],
) -> Workflow | None:
    """Apply `template`'s overrun policy to one trigger. O(1) unless it aborts.

    Args:
        template: the template triggered.
        running: how many of its instances run.
        locked: how many of those are still locked (skip-until-unlock).
        instances: the running instances (read only to abort them; a dict's
            values view will do).
        make: builds the new, not yet started workflow of a template.

    Returns:
        The new workflow, or None when the policy says skip.
    """
    decision = decide(template.policy, running, locked)
    if decision is Decision.skip:
        return None
    workflow = make(template)
    if decision is Decision.abort_then_start:
        # A copy: cancelling one may end it, and so remove it from `instances`, at once.
        workflow.run_after(list(instances))
    return workflow
