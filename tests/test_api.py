"""The public surface: the import paths of SPEC.md, `__all__`, packaging."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import types
from collections.abc import Callable
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any, cast

import pytest
from support import template

import tukio

# "Import paths that must work" in SPEC.md: module -> names.
IMPORT_PATHS: dict[str, list[str]] = {
    "tukio": [
        "Engine",
        "TaskRegistry",
        "TaskHolder",
        "JoinTask",
        "UnknownTaskName",
        "WorkflowTemplate",
        "Workflow",
        "Event",
        "EventSource",
        "get_broker",
        "EXEC_TOPIC",
    ],
    "tukio.task": [
        "register",
        "new_task",
        "TaskRegistry",
        "UnknownTaskName",
        "TaskHolder",
        "JoinTask",
        "TaskTemplate",
        "TukioTask",
        "TukioTaskError",
        "tukio_factory",
    ],
    "tukio.task.factory": ["TaskExecState"],
    "tukio.workflow": [
        "Workflow",
        "WorkflowTemplate",
        "OverrunPolicy",
        "WorkflowExecState",
        "WorkflowError",
        "WorkflowRootTaskError",
        "TemplateGraphError",
        "RescueError",
        "new_workflow",
    ],
    "tukio.broker": ["Broker", "get_broker", "EXEC_TOPIC", "workflow_exec_topics", "TopicManager"],
    "tukio.event": ["Event", "EventSource"],
    "tukio.dag": ["DAG", "DAGValidationError"],
    "tukio.utils": ["FutureState", "SkipTask", "Listen", "TimeoutHandle"],
}

PAIRS = [(module, name) for module, names in IMPORT_PATHS.items() for name in names]


@pytest.mark.parametrize(("module", "name"), PAIRS, ids=[f"{m}.{n}" for m, n in PAIRS])
def test_import_path(module: str, name: str) -> None:
    namespace: dict[str, object] = {}
    exec(f"from {module} import {name}", namespace)
    assert namespace[name] is getattr(importlib.import_module(module), name)


def test_same_object_under_every_path() -> None:
    for name in ("TaskRegistry", "TaskHolder", "JoinTask", "UnknownTaskName", "WorkflowTemplate", "Workflow"):
        objects = {id(getattr(importlib.import_module(m), name)) for m, names in IMPORT_PATHS.items() if name in names}
        assert len(objects) == 1, name
    assert tukio.get_broker is importlib.import_module("tukio.broker").get_broker


def isort_key(name: str) -> tuple[int, str]:
    """The order ruff's RUF022 keeps: CONSTANTS, then Classes, then the rest."""
    if name.isupper():
        return 0, name
    if name[0].isupper():
        return 1, name
    return 2, name


def test_all_is_sorted() -> None:
    assert tukio.__all__ == sorted(tukio.__all__, key=isort_key)
    assert len(set(tukio.__all__)) == len(tukio.__all__)


def test_all_matches_what_is_importable() -> None:
    for name in tukio.__all__:
        assert hasattr(tukio, name), name
    namespace: dict[str, object] = {}
    exec("from tukio import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(tukio.__all__)
    public = {
        name
        for name, value in vars(tukio).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public == set(tukio.__all__) - {"__version__"}
    assert "__version__" in tukio.__all__
    assert isinstance(tukio.__version__, str)


@pytest.mark.parametrize(
    "module", ["tukio.task", "tukio.workflow", "tukio.broker", "tukio.event", "tukio.dag", "tukio.utils"]
)
def test_submodule_all_resolves(module: str) -> None:
    mod = importlib.import_module(module)
    for name in mod.__all__:
        assert hasattr(mod, name), f"{module}.{name}"
    assert mod.__all__ == sorted(mod.__all__, key=isort_key)


def _pyproject() -> dict[str, Any]:
    try:
        import tomllib
    except ImportError:  # Python 3.10: the same parser, from PyPI (requirements-dev.txt)
        import tomli as tomllib
    path = Path(tukio.__file__).resolve().parent.parent / "pyproject.toml"
    if not path.is_file():  # pragma: no cover - running against an installed wheel
        pytest.skip("no pyproject.toml next to the package")
    return cast(dict[str, Any], tomllib.loads(path.read_text(encoding="utf-8")))


def test_py_typed_and_schema_are_shipped() -> None:
    package = resources.files("tukio")
    assert package.joinpath("py.typed").is_file()
    assert package.joinpath("schema", "workflow.schema.json").is_file()
    # Declared as package data, so that wheels carry them.
    package_data = _pyproject()["tool"]["setuptools"]["package-data"]
    assert "py.typed" in package_data["tukio"]
    assert "schema/*.json" in package_data["tukio"]


def test_metadata_is_pep_621_with_an_spdx_license() -> None:
    project = _pyproject()["project"]
    assert project["version"] == tukio.__version__
    assert project["license"] == "Apache-2.0"
    assert project["license-files"] == ["LICENSE"]
    # Setuptools deprecates license classifiers next to an SPDX expression.
    assert not [c for c in project["classifiers"] if c.startswith("License ::")]
    assert project["scripts"] == {"tukio": "tukio.cli:main"}
    assert project["dependencies"] == []
    assert project["authors"]
    assert project["urls"]
    setup = Path(tukio.__file__).resolve().parent.parent / "setup.py"
    assert "setup()" in setup.read_text(encoding="utf-8")
    license_text = (setup.parent / "LICENSE").read_text(encoding="utf-8")
    assert "[yyyy]" not in license_text
    assert "Apache License" in license_text


def test_only_the_standard_library_is_imported() -> None:
    code = (
        "import sys, tukio, tukio.schema, tukio.task, tukio.workflow, tukio.broker; "
        "print('\\n'.join(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    third_party = {
        m for m in out.split() if m not in sys.stdlib_module_names and m != "tukio" and not m.startswith("_")
    }
    assert third_party == set()


async def test_a_report_as_json_in_one_call(registered: Callable[..., Any], task_name: Callable[[str], str]) -> None:
    async def stamp(event: tukio.Event) -> dict[str, Any]:
        return {"at": datetime(2026, 1, 2, tzinfo=timezone.utc), "error": ValueError("kept as text")}

    name = task_name("stamp")
    registered(name, stamp)
    # With extension keys (your own metadata): reports keep them.
    workflow = tukio.Workflow(template([("a", name, {"comment": "mine"})], {"a": []}, id="wf", owner="me"))
    workflow.run({"x": 1})
    await workflow
    report = workflow.report()
    with pytest.raises(TypeError, match="not JSON serializable"):
        json.dumps(report)
    back = json.loads(tukio.dumps_report(report))
    assert back["id"] == "wf"
    assert back["owner"] == "me"
    assert back["tasks"][0]["comment"] == "mine"
    assert back["exec"]["state"] == "finished"
    assert datetime.fromisoformat(back["exec"]["start"]).tzinfo is not None
    assert back["tasks"][0]["exec"]["outputs"] == {
        "at": "2026-01-02T00:00:00+00:00",
        "error": "ValueError: kept as text",
    }
    assert tukio.dumps_report(report, indent=None).count("\n") == 0
