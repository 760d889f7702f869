"""The JSON API: endpoints over a `tukio.manage.Manager`."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from tukio.manage import Manager, UnknownExecution
from tukio.web._guard import refusal
from tukio.web._metrics import prometheus_text
from tukio.web._openapi import OPENAPI
from tukio.web._params import BadParameter, list_filters

__all__ = ["Api"]

Endpoint = Callable[[Request], Awaitable[Response]]


def error(status: int, message: str, headers: dict[str, str] | None = None, **more: Any) -> JSONResponse:
    """A JSON error response: ``{"error": message, ...}``."""
    return JSONResponse({"error": message, **more}, status_code=status, headers=headers)


class Api:
    """The API's endpoints, each guarded (token, cross-site checks) and with JSON errors.

    Args:
        manager: reads and acts on the executions.
        token: the bearer token every API request needs, or None.
        extra_metrics: returns more Prometheus text for ``/metrics`` (this
            process's own instruments), or None.
    """

    def __init__(self, manager: Manager, token: str | None, extra_metrics: Callable[[], str] | None) -> None:
        self.manager = manager
        self.token = token
        self.extra_metrics = extra_metrics

    def guarded(self, handler: Endpoint, *, action: bool = False) -> Endpoint:
        """Wrap `handler`: refuse what `refusal` refuses, turn known errors into JSON errors."""

        async def endpoint(request: Request) -> Response:
            refused = refusal(request, self.token, action)
            if refused is not None:
                status, why = refused
                return error(status, why, {"WWW-Authenticate": "Bearer"} if status == 401 else None)
            try:
                return await handler(request)
            except BadParameter as exc:
                return error(400, str(exc), parameter=exc.name)
            except UnknownExecution as exc:
                return error(404, str(exc.args[0]) if exc.args else "unknown execution")
            except ValueError as exc:  # an action that does not apply (an unfinished execution retried...)
                return error(409, str(exc))

        endpoint.__name__ = handler.__name__
        endpoint.__doc__ = handler.__doc__
        return endpoint

    async def executions(self, request: Request) -> Response:
        """``GET /api/executions``: one page of executions, newest first, filtered."""
        filters = list_filters(request.query_params, request.query_params.getlist("state"))
        try:
            page = await self.manager.list(**filters)
        except ValueError as exc:  # a cursor the manager cannot read
            raise BadParameter("after", str(exc)) from None
        return JSONResponse({"items": [item.as_dict() for item in page.items], "next": page.next})

    async def execution(self, request: Request) -> Response:
        """``GET /api/executions/{id}``: one execution with its tasks and graph."""
        detail = await self.manager.get(request.path_params["exec_id"])
        return JSONResponse(detail.as_dict())

    async def cancel(self, request: Request) -> Response:
        """``POST /api/executions/{id}/cancel``: cancel it wherever it runs."""
        exec_id = request.path_params["exec_id"]
        result = await self.manager.cancel(exec_id)
        return JSONResponse({"id": exec_id, "result": result})

    async def retry(self, request: Request) -> Response:
        """``POST /api/executions/{id}/retry``: a new execution (from one task, optionally)."""
        exec_id = request.path_params["exec_id"]
        from_task = request.query_params.get("from_task") or await _body_field(request, "from_task")
        new_id = await self.manager.retry(exec_id, from_task=from_task or None)
        return JSONResponse({"id": new_id, "retried": exec_id, "from_task": from_task or None}, status_code=201)

    async def resume(self, request: Request) -> Response:
        """``POST /api/executions/{id}/resume``: run a failed or cancelled one again, from where it stopped."""
        exec_id = request.path_params["exec_id"]
        await self.manager.resume(exec_id)
        return JSONResponse({"id": exec_id, "result": "resumed"})

    async def nodes(self, request: Request) -> Response:
        """``GET /api/nodes``: the nodes of the cluster sharing the store."""
        return JSONResponse({"nodes": [node.as_dict() for node in await self.manager.nodes()]})

    async def openapi(self, request: Request) -> Response:
        """``GET /api/openapi.json``: the API's OpenAPI 3 description."""
        return JSONResponse(OPENAPI)

    async def metrics(self, request: Request) -> Response:
        """``GET /metrics``: Prometheus text from the store (and this process's instruments)."""
        text = await prometheus_text(self.manager)
        if self.extra_metrics is not None:
            text += self.extra_metrics()
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")


async def _body_field(request: Request, name: str) -> Any:
    """The field `name` of the request's JSON object body (None without a body)."""
    body = await request.body()
    if not body.strip():
        return None
    try:
        value = json.loads(body)
    except ValueError:
        raise BadParameter(name, "the request body is not JSON") from None
    if not isinstance(value, dict):
        raise BadParameter(name, "the request body is not a JSON object")
    field = value.get(name)
    if field is not None and not isinstance(field, str):
        raise BadParameter(name, f"{field!r} is not a string")
    return field
