"""The Starlette application: the API routes and the console's files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from tukio.engine import Engine
from tukio.manage import Manager
from tukio.store.base import Store
from tukio.web._api import Api, error

__all__ = ["STATIC", "build_app"]

#: The console's files (HTML, JS modules, CSS), shipped in the package.
STATIC = Path(__file__).with_name("static")
#: The console's content security policy: nothing from elsewhere, no inline scripts.
_CSP = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'"


async def _console(request: Request) -> Response:
    """The console's page (every console path: the script shows the page the path names)."""
    return FileResponse(STATIC / "index.html", headers={"Content-Security-Policy": _CSP, "Cache-Control": "no-cache"})


async def _http_error(request: Request, exc: Exception) -> Response:
    """Errors Starlette raises (no route, wrong method), as JSON."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    if status == 404:
        return error(404, f"nothing at {request.url.path}")
    return error(status, str(exc.detail) if isinstance(exc, HTTPException) else "internal error")


def build_app(
    store: Store, token: str | None, engine: Engine | None, extra_metrics: Callable[[], str] | None
) -> Starlette:
    """Build the application (see `tukio.web.create_app`)."""
    api = Api(Manager(store, engine=engine), token, extra_metrics)
    routes = [
        Route("/api/openapi.json", api.guarded(api.openapi)),
        Route("/api/executions", api.guarded(api.executions)),
        Route("/api/executions/{exec_id}", api.guarded(api.execution)),
        Route("/api/executions/{exec_id}/cancel", api.guarded(api.cancel, action=True), methods=["POST"]),
        Route("/api/executions/{exec_id}/retry", api.guarded(api.retry, action=True), methods=["POST"]),
        Route("/api/executions/{exec_id}/resume", api.guarded(api.resume, action=True), methods=["POST"]),
        Route("/api/nodes", api.guarded(api.nodes)),
        Route("/metrics", api.guarded(api.metrics)),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
        Route("/", _console),
        Route("/executions/{exec_id}", _console),
        Route("/cluster", _console),
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: _http_error})
