"""Prometheus text for ``GET /metrics``: the store's executions and nodes."""

from __future__ import annotations

import asyncio
from collections import Counter

from tukio.manage import STATES, Manager

__all__ = ["prometheus_text"]


def sample(name: str, kind: str, help_text: str, values: dict[str, float] | float, label: str = "") -> str:
    """One metric in Prometheus text format: HELP, TYPE and its samples (one per label value)."""
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    if isinstance(values, dict):
        lines += [f'{name}{{{label}="{key}"}} {value:g}' for key, value in sorted(values.items())]
    else:
        lines.append(f"{name} {values:g}")
    return "\n".join(lines) + "\n"


async def prometheus_text(manager: Manager) -> str:
    """Return the store's executions by state, the failed ones and the nodes alive, as Prometheus text.

    A database store counts them itself (see `tukio.store._admin.Admin.counts`).
    """
    store = manager.store
    admin = store.admin()
    assert admin is not None  # the manager was made: the store has one
    by_state, failed = await asyncio.to_thread(admin.counts) if store.blocking else admin.counts()
    states: Counter[str] = Counter(dict.fromkeys(STATES, 0))
    states.update(by_state)
    nodes = await manager.nodes()
    return (
        sample("tukio_executions", "gauge", "Executions in the store, by state", dict(states), "state")
        + sample("tukio_executions_failed", "gauge", "Executions where a task failed or timed out", failed)
        + sample("tukio_nodes_alive", "gauge", "Nodes whose lease is current", sum(node.alive for node in nodes))
        + sample("tukio_nodes", "gauge", "Nodes known to the store", len(nodes))
    )
