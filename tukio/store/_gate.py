"""The overrun gate of a shared store: one template's policy applied across every node.

A store several engines share (`PostgresStore`, `SQLiteStore` with a node)
admits a trigger in one transaction, under a lock of its template (an
advisory lock on PostgreSQL, the write lock on SQLite): it reads the
unfinished executions of the template, lets `tukio.policy.decide` rule on
them, and, unless the policy says skip, inserts the new execution's begin
record in the same transaction. Two nodes triggered at once are admitted one
after the other, so under 'skip' only one of them starts.

Under 'abort-running' the same transaction cancels what runs: an execution
of a dead node is marked cancelled at once (it is never taken over); one of
a live node gets a cancel request, which its owner acts on (and a node that
takes it over instead drops it). This module holds the part both stores share.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from tukio.policy import Decision, OverrunPolicy, decide

__all__ = ["Admission", "Running", "rule"]


class Running(NamedTuple):
    """One unfinished execution of the template, as the store sees it."""

    exec_id: str
    locked: bool
    mine: bool  # owned by the admitting node (and epoch)
    alive: bool  # its owner is a live node


@dataclass
class Admission:
    """What the store does for one trigger."""

    decision: Decision
    #: Executions of dead nodes (or of no node): marked cancelled now.
    cancel_now: list[str] = field(default_factory=list)
    #: Executions of other live nodes: a cancel request each.
    request: list[str] = field(default_factory=list)
    #: What the new execution waits for before it starts (abort-running): requested and local ones.
    wait: list[str] = field(default_factory=list)


def rule(policy: OverrunPolicy, exec_id: str, rows: Sequence[Running], here: Collection[str]) -> Admission:
    """Apply `policy` to the unfinished executions `rows` of a template.

    Args:
        policy: the template's overrun policy.
        exec_id: the id of the execution to admit (a retried admission finds it among `rows`).
        rows: the template's unfinished executions in the store.
        here: the executions this node runs (or is admitting) now. The
            node's own executions not among them have ended (their end is
            not committed yet) or cannot run here: they do not count.

    Returns:
        The decision, and what to cancel.
    """
    if any(r.exec_id == exec_id for r in rows):  # admitted by an attempt whose answer was lost
        return Admission(Decision.start)
    counted = [r for r in rows if not r.mine or r.exec_id in here]
    decision = decide(policy, len(counted), sum(1 for r in counted if r.locked))
    if decision is not Decision.abort_then_start:
        return Admission(decision)
    dead = [r.exec_id for r in counted if not r.mine and not r.alive]
    remote = [r.exec_id for r in counted if not r.mine and r.alive]
    local = [r.exec_id for r in counted if r.mine]
    return Admission(decision, dead, remote, remote + local)
