"""The web console and JSON API of a store's executions (the `tukio[web]` extra).

`create_app(store)` returns a Starlette application: mount it in your own
ASGI application, or run it with ``tukio serve --store S``. It serves the
console at ``/``, the JSON API under ``/api/`` (its OpenAPI description at
``/api/openapi.json``) and Prometheus text at ``/metrics``. Every file of the
console is shipped in the package: it works offline.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from tukio.errors import TukioError

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from tukio.engine import Engine
    from tukio.store.base import Store

__all__ = ["create_app"]


def create_app(
    store: Store,
    token: str | None = None,
    *,
    engine: Engine | None = None,
    metrics: Callable[[], str] | None = None,
) -> Starlette:
    """Build the console and API application over `store`.

    Args:
        store: the journal to show and act on (any process may serve it:
            no engine is needed).
        token: when given, every API request needs ``Authorization: Bearer
            <token>`` (the console asks for it once).
        metrics: returns more Prometheus text appended to ``/metrics`` (say,
            this process's instruments: ``lambda: prometheus_text(reader)``
            with `tukio.telemetry.prometheus_text`).

    Returns:
        The Starlette application.

    Raises:
        TukioError: Starlette is not installed (``pip install 'tukio[web]'``).
        ValueError: `token` is empty.
    """
    if token is not None and not token.strip():
        raise ValueError("the token is empty")
    try:
        from tukio.web._app import build_app
    except ImportError as exc:
        raise TukioError(f"tukio.web needs Starlette: pip install 'tukio[web]' ({exc})") from exc
    return build_app(store, token, engine, metrics)
