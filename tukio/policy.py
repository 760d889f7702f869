"""Overrun policies: what to do when a template is triggered while it runs."""

from __future__ import annotations

import enum

__all__ = ["Decision", "OverrunPolicy", "decide"]


class OverrunPolicy(str, enum.Enum):
    """What happens when data arrives for a template that already runs."""

    skip = "skip"
    start_new = "start-new"
    skip_until_unlock = "skip-until-unlock"
    abort_running = "abort-running"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def get_default_policy(cls) -> OverrunPolicy:
        """Return the default policy, 'skip-until-unlock'."""
        return cls.skip_until_unlock

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
        case OverrunPolicy.start_new:
            return Decision.start
        case OverrunPolicy.skip:
            return Decision.skip if running else Decision.start
        case OverrunPolicy.skip_until_unlock:
            return Decision.skip if locked else Decision.start
        case OverrunPolicy.abort_running:
            return Decision.abort_then_start if running else Decision.start
    raise AssertionError(policy)  # pragma: no cover
