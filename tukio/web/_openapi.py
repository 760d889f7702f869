"""The OpenAPI 3 description of the JSON API (``GET /api/openapi.json``)."""

from __future__ import annotations

from typing import Any

from tukio.manage import MAX_LIMIT, STATES

__all__ = ["OPENAPI"]


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


def _json(description: str, ref: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": ref}}}}


_ID = {"name": "exec_id", "in": "path", "required": True, "schema": {"type": "string"}}
_TIME = {"type": ["string", "null"], "format": "date-time"}
_TEXT = {"type": ["string", "null"]}
_ERRORS = {
    "400": _json("a bad parameter (named in 'parameter')", "#/components/schemas/Error"),
    "401": _json("missing or wrong bearer token", "#/components/schemas/Error"),
}
_ACTION_ERRORS = {
    **_ERRORS,
    "403": _json("a cross-site request, or one without the X-Tukio-Action header", "#/components/schemas/Error"),
    "404": _json("unknown execution", "#/components/schemas/Error"),
    "409": _json("the action does not apply to the execution (its state)", "#/components/schemas/Error"),
}
_SUMMARY: dict[str, Any] = {
    "type": "object",
    "required": ["id", "template", "state", "node", "start", "end"],
    "properties": {
        "id": {"type": "string"},
        "template": _TEXT,
        "version": _TEXT,
        "state": {"type": "string", "enum": list(STATES)},
        "failed": {"type": "boolean", "description": "a task ended in exception or timeout"},
        "node": _TEXT,
        "start": _TIME,
        "end": _TIME,
        "error": _TEXT,
    },
}

#: The API's description.
OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "tukio", "version": "1", "description": "The executions of a tukio store."},
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {"error": {"type": "string"}, "parameter": {"type": "string"}},
            },
            "ExecutionSummary": _SUMMARY,
            "Page": {
                "type": "object",
                "properties": {
                    "items": {"type": "array", "items": {"$ref": "#/components/schemas/ExecutionSummary"}},
                    "next": {"type": ["string", "null"], "description": "the 'after' of the next page"},
                },
            },
            "ExecutionDetail": {
                "allOf": [
                    {"$ref": "#/components/schemas/ExecutionSummary"},
                    {
                        "type": "object",
                        "properties": {
                            "tasks": {"type": "array", "items": {"type": "object"}},
                            "graph": {"type": "object", "additionalProperties": {"type": "array"}},
                        },
                    },
                ]
            },
            "Node": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "alive": {"type": "boolean"},
                    "epoch": {"type": ["integer", "null"]},
                    "lease_expires": _TIME,
                    "owned": {"type": "integer"},
                },
            },
        },
    },
    "security": [{}, {"bearer": []}],
    "paths": {
        "/api/executions": {
            "get": {
                "summary": "List executions, newest first",
                "parameters": [
                    _query("state", "one state or several (comma-separated)", {"type": "string"}),
                    _query("failed", "only those where a task failed (true) or none did", {"type": "boolean"}),
                    _query("template", "a template id", {"type": "string"}),
                    _query("version", "a template version", {"type": "string"}),
                    _query("node", "the node that runs (or ran) it", {"type": "string"}),
                    _query("since", "started at or after (ISO 8601)", {"type": "string", "format": "date-time"}),
                    _query("until", "started before (ISO 8601)", {"type": "string", "format": "date-time"}),
                    _query("limit", "page size", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}),
                    _query("after", "the 'next' of the previous page", {"type": "string"}),
                ],
                "responses": {"200": _json("a page", "#/components/schemas/Page"), **_ERRORS},
            }
        },
        "/api/executions/{exec_id}": {
            "get": {
                "summary": "One execution, with its tasks and graph",
                "parameters": [_ID],
                "responses": {"200": _json("the execution", "#/components/schemas/ExecutionDetail"), **_ACTION_ERRORS},
            }
        },
        "/api/executions/{exec_id}/cancel": {
            "post": {
                "summary": "Cancel an execution, wherever it runs",
                "parameters": [_ID],
                "responses": {"200": {"description": "what happened ('result')"}, **_ACTION_ERRORS},
            }
        },
        "/api/executions/{exec_id}/retry": {
            "post": {
                "summary": "Run an execution again, as a new one (from one of its tasks)",
                "parameters": [_ID, _query("from_task", "the task to run again from", {"type": "string"})],
                "requestBody": {
                    "required": False,
                    "content": {
                        "application/json": {
                            "schema": {"type": "object", "properties": {"from_task": {"type": "string"}}}
                        }
                    },
                },
                "responses": {"201": {"description": "the new execution's 'id'"}, **_ACTION_ERRORS},
            }
        },
        "/api/executions/{exec_id}/resume": {
            "post": {
                "summary": "Run a failed, timed-out or cancelled execution again from where it stopped",
                "parameters": [_ID],
                "responses": {"200": {"description": "resumed"}, **_ACTION_ERRORS},
            }
        },
        "/api/nodes": {
            "get": {
                "summary": "The nodes sharing the store",
                "responses": {"200": {"description": "'nodes': a list of Node"}, **_ERRORS},
            }
        },
        "/metrics": {"get": {"summary": "Prometheus text", "responses": {"200": {"description": "text/plain"}}}},
    },
}
