"""The JSON Schema (draft 2020-12) of the workflow template format."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

__all__ = ["load_schema"]

SCHEMA_FILE = "workflow.schema.json"


def load_schema() -> dict[str, Any]:
    """Return the JSON Schema of workflow templates, as a new dict.

    The schema checks what a schema can express; `WorkflowTemplate.from_dict`
    also rejects cycles, unknown task ids in the graph and duplicate task ids.

    Returns:
        The parsed schema; callers may modify it.
    """
    text = resources.files(__name__).joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema
