"""`WorkflowLock`: held by a new workflow until it unlocks (skip-until-unlock)."""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["WorkflowLock"]


class WorkflowLock:
    """A one-shot lock: created locked, released once, callbacks told then."""

    __slots__ = ("_callbacks", "_locked")

    def __init__(self) -> None:
        self._locked = True
        # None, one callback (the usual case: the engine's), or a list of them.
        self._callbacks: Callable[[], None] | list[Callable[[], None]] | None = None

    def locked(self) -> bool:
        """True until `release()` is called."""
        return self._locked

    def release(self) -> None:
        """Unlock (once; later calls do nothing) and run the release callbacks."""
        if not self._locked:
            return
        self._locked = False
        callbacks, self._callbacks = self._callbacks, None
        if callbacks is None:
            return
        if not isinstance(callbacks, list):
            callbacks()
            return
        for callback in callbacks:
            callback()

    def add_release_callback(self, callback: Callable[[], None]) -> None:
        """Call `callback()` when the lock is released (at once if it is)."""
        if not self._locked:
            callback()
        elif self._callbacks is None:
            self._callbacks = callback
        elif isinstance(self._callbacks, list):
            self._callbacks.append(callback)
        else:
            self._callbacks = [self._callbacks, callback]
