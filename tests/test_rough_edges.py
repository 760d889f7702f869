"""Rough edges of issue 22: an engine made before its loop runs, and validate naming every problem at once."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tukio import Engine, WorkflowTemplate
from tukio.cli import main

LOOP_ERROR = "this Engine belongs to another event loop than the one running"


def _template(name: str) -> WorkflowTemplate:
    return WorkflowTemplate.from_dict({"id": "edge", "tasks": [{"id": "a", "name": name}], "graph": {}})


def test_an_engine_made_before_asyncio_run_fails_at_once(noop: str) -> None:
    current = asyncio.new_event_loop()
    asyncio.set_event_loop(current)  # as at module level: the thread has a current loop, not running
    try:
        engine = Engine()
        assert engine.get_loop() is current

        async def main() -> None:
            await engine.load(_template(noop))

        with pytest.raises(RuntimeError, match=LOOP_ERROR) as caught:
            asyncio.run(main())
    finally:
        asyncio.set_event_loop(None)
        current.close()
    assert "Make the Engine inside the coroutine that asyncio.run() runs" in str(caught.value)


def test_an_engine_made_before_its_loop_runs_works_once_it_does(noop: str) -> None:
    loop = asyncio.new_event_loop()
    try:
        engine = Engine(loop=loop)

        async def main() -> str:
            await engine.load(_template(noop))
            workflow = await engine.trigger("edge", {})
            assert workflow is not None
            await workflow
            return str(workflow.report()["exec"]["state"])

        assert loop.run_until_complete(main()) == "finished"
        loop.run_until_complete(engine.stop())
    finally:
        loop.close()


def test_a_module_level_engine_never_hangs(tmp_path: Path, noop: str) -> None:
    """The program of the issue: an engine at module level, then asyncio.run(main())."""
    script = tmp_path / "module_level.py"
    script.write_text(
        textwrap.dedent(
            """
            import asyncio
            from tukio import Engine, register

            @register("edge-noop")
            async def noop(event):
                return None

            engine = Engine()

            async def main():
                await engine.load({"id": "edge", "tasks": [{"id": "a", "name": "edge-noop"}], "graph": {}})
                workflow = await engine.trigger("edge", {})
                await workflow

            asyncio.run(main())
            """
        )
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert LOOP_ERROR in done.stderr


def test_validate_names_unknown_tasks_with_the_other_problems(
    tmp_path: Path, registered: Callable[..., Any], task_name: Callable[[str], str], capsys: pytest.CaptureFixture[str]
) -> None:
    async def double(event: Any) -> None:
        return None

    name = task_name("double-it")
    registered(name, double)
    module = tmp_path / "edge_tasks.py"
    module.write_text("")  # the task is registered by the test; --modules turns the names check on
    path = tmp_path / "wf.json"
    typo = name.replace("double", "dubble")
    path.write_text(json.dumps({"tasks": [{"id": "a", "name": typo}, {"id": "b", "name": name}], "graph": {"a": "c"}}))
    assert main(["validate", "--modules", str(module), str(path)]) == 2
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{path}: graph.a: successors must be a list, got str"
    assert f"{path}: tasks[0].name: unknown task name {typo!r} (did you mean {name!r}?)" in out
