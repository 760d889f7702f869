"""Overrun policies: what to do when a template is triggered while it runs."""

from __future__ import annotations

import enum

__all__ = ["Decision", "OverrunPolicy", "decide"]


class OverrunPolicy(str, enum.Enum):
    """What happens when data arrives for a template that already runs.

    The members have the original's names (`SKIP`, `START_NEW`,
    `SKIP_UNTIL_UNLOCK`, `ABORT_RUNNING`); the lower-case names are aliases
    of the same members.
    """

    SKIP = "skip"
    START_NEW = "start-new"
    SKIP_UNTIL_UNLOCK = "skip-until-unlock"
    ABORT_RUNNING = "abort-running"
    # Aliases (same values, so the same members), kept for code written against tukio 2.0.
    skip = "skip"  # noqa: PIE796
    start_new = "start-new"  # noqa: PIE796
    skip_until_unlock = "skip-until-unlock"  # noqa: PIE796
    abort_running = "abort-running"  # noqa: PIE796

    def __str__(self) -> str:
        return self.value

    @classmethod
    def get_default_policy(cls) -> OverrunPolicy:
        """Return the default policy, 'skip-until-unlock'."""
        return cls.SKIP_UNTIL_UNLOCK

    @classmethod
    def get(cls, policy: OverrunPolicy | str | None) -> OverrunPolicy:
        """Return the policy named `policy` (the default when None).

        Raises:
            ValueError: no policy has that name.
        """
        if policy is None:
            return cls.get_default_policy()
        try:
            return cls(policy)
        except ValueError:
            names = ", ".join(repr(p.value) for p in cls)
            raise ValueError(f"unknown overrun policy {policy!r} (expected one of {names})") from None


class Decision(enum.Enum):
    """What a policy says about one trigger."""

    start = "start"
    skip = "skip"
    abort_then_start = "abort-then-start"


def decide(policy: OverrunPolicy, running: int, locked: int) -> Decision:
    """Apply `policy` given how many instances run and how many are locked. O(1)."""
    match policy:
        case OverrunPolicy.START_NEW:
            return Decision.start
        case OverrunPolicy.SKIP:
            return Decision.skip if running else Decision.start
        case OverrunPolicy.SKIP_UNTIL_UNLOCK:
            return Decision.skip if locked else Decision.start
        case OverrunPolicy.ABORT_RUNNING:
            return Decision.abort_then_start if running else Decision.start
    raise AssertionError(policy)  # pragma: no cover
