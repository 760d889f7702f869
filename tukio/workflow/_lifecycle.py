"""The private lifecycle of a `Workflow`: one state enum and its allowed moves."""

from __future__ import annotations

import enum

from tukio.utils import FutureState

__all__ = ["State", "check_move"]


class State(enum.Enum):
    """Where a workflow is in its life."""

    CREATED = "created"
    RUNNING = "running"
    SUSPENDED = "suspended"
    CANCELLING = "cancelling"  # tasks cancelled, waiting for them to end
    TIMING_OUT = "timing out"  # the same, ends as 'timeout'
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed out"

    # Members are singletons compared by identity: hash them in C, not by name
    # (Enum's own __hash__ is Python code, run on every state check).
    __hash__ = object.__hash__

    @property
    def ended(self) -> bool:
        """True for the four final states."""
        return self in _ENDED

    @property
    def halting(self) -> bool:
        """True while no new task may start (cancelling or timing out)."""
        return self is State.CANCELLING or self is State.TIMING_OUT


_ENDED = frozenset({State.FINISHED, State.FAILED, State.CANCELLED, State.TIMED_OUT})

#: Every move a workflow may make; anything else is a bug in the caller.
ALLOWED = frozenset(
    {
        (State.CREATED, State.RUNNING),  # run(), fast_forward()
        (State.CREATED, State.FAILED),  # no single root task
        (State.CREATED, State.CANCELLING),  # cancel() before it ran
        (State.CREATED, State.TIMING_OUT),
        (State.RUNNING, State.SUSPENDED),
        (State.RUNNING, State.CANCELLING),
        (State.RUNNING, State.TIMING_OUT),
        (State.RUNNING, State.FINISHED),
        (State.RUNNING, State.FAILED),  # the trigger could not be recorded
        (State.SUSPENDED, State.RUNNING),  # resume()
        (State.SUSPENDED, State.CANCELLING),
        (State.SUSPENDED, State.TIMING_OUT),
        (State.SUSPENDED, State.FINISHED),  # every task ended before it was suspended
        (State.CANCELLING, State.TIMING_OUT),  # the timeout expired while cancelling
        (State.CANCELLING, State.CANCELLED),
        (State.TIMING_OUT, State.TIMED_OUT),
    }
)

#: The `FutureState` of a workflow in each state.
FUTURE_STATE = {
    State.CREATED: FutureState.pending,
    State.RUNNING: FutureState.pending,
    State.SUSPENDED: FutureState.suspended,
    State.CANCELLING: FutureState.pending,
    State.TIMING_OUT: FutureState.pending,
    State.FINISHED: FutureState.finished,
    State.FAILED: FutureState.exception,
    State.CANCELLED: FutureState.cancelled,
    State.TIMED_OUT: FutureState.timeout,
}


def check_move(uid: str, current: State, new: State) -> State:
    """Return `new` if a workflow may move there from `current`.

    Raises:
        RuntimeError: naming both states, when the move is not allowed.
    """
    if (current, new) not in ALLOWED:
        raise RuntimeError(f"workflow {uid}: cannot go from {current.value!r} to {new.value!r}")
    return new
