"""Prometheus text for ``GET /metrics``: the store's executions and nodes."""

from __future__ import annotations

import asyncio
from collections import Counter

from tukio.manage import STATES, Manager
from tukio.store._admin import Admin, Filters
from tukio.store._sqladmin import SQLAdmin

__all__ = ["prometheus_text"]


def sample(name: str, kind: str, help_text: str, values: dict[str, float] | float, label: str = "") -> str:
    """One metric in Prometheus text format: HELP, TYPE and its samples (one per label value)."""
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    if isinstance(values, dict):
        lines += [f'{name}{{{label}="{key}"}} {value:g}' for key, value in sorted(values.items())]
    else:
        lines.append(f"{name} {values:g}")
    return "\n".join(lines) + "\n"


#: The executions by state, in one query (the state column is indexed for the listings).
_BY_STATE = "SELECT state, count(*) FROM {p}executions GROUP BY state"


def _counts(admin: Admin) -> tuple[dict[str, int], int]:
    """The executions by state, and how many failed (a workflow or one of its tasks)."""
    failed = len(admin.matching(Filters(failed=True)))
    if isinstance(admin, SQLAdmin):  # counted by the database
        rows = admin.runner.fetch(admin.dialect.sql(_BY_STATE), ())
        return {str(state): int(count) for state, count in rows}, failed
    return dict(Counter(row.state for row in admin.matching(Filters()))), failed


async def prometheus_text(manager: Manager) -> str:
    """Return the store's executions by state, the failed ones and the nodes alive, as Prometheus text.

    The states are counted by the database; the failed executions are read
    (there should be few: a store with many makes it slower).
    """
    store = manager.store
    admin = store.admin()
    assert admin is not None  # the manager was made: the store has one
    by_state, failed = await asyncio.to_thread(_counts, admin) if store.blocking else _counts(admin)
    states: Counter[str] = Counter(dict.fromkeys(STATES, 0))
    states.update(by_state)
    nodes = await manager.nodes()
    return (
        sample("tukio_executions", "gauge", "Executions in the store, by state", dict(states), "state")
        + sample("tukio_executions_failed", "gauge", "Executions where a task failed or timed out", failed)
        + sample("tukio_nodes_alive", "gauge", "Nodes whose lease is current", sum(node.alive for node in nodes))
        + sample("tukio_nodes", "gauge", "Nodes known to the store", len(nodes))
    )
