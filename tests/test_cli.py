"""The ``tukio`` command line: subprocesses for the real thing, main() for the rest."""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import io
import itertools
import json
import math
import os
import re
import runpy
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import tukio
from tukio import Event, EventSource, TaskRegistry
from tukio.cli import COMMANDS, main
from tukio.cli._output import LiveOutput, silence_stdout
from tukio.report_json import dumps_report, to_jsonable

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "cli_fixtures"

_modules = itertools.count()

# Tasks of the in-process tests; {p} makes the names unique to each test.
MODULE = '''
"""Tasks for one CLI test."""
import asyncio
import pathlib

from tukio import SkipTask, TaskHolder, register


@register("{p}ok")
async def ok(event):
    """Mark the data as seen.

    More text that show leaves out.
    """
    return {{**event.data, "seen": True}}


@register("{p}boom")
async def boom(event):
    """Always fail."""
    raise ValueError("boom")


@register("{p}hold")
async def hold(event):
    await asyncio.Event().wait()


@register("{p}skip")
async def skip(event):
    """Skip itself."""
    raise SkipTask("nothing to do")


_calls = []


@register("{p}flaky")
async def flaky(event):
    """Fail once with a ConnectionError, then report progress and succeed."""
    _calls.append(1)
    if len(_calls) == 1:
        raise ConnectionError("reset")
    asyncio.current_task().dispatch_progress({{"pct": 50}})
    return None


@register("{p}reject")
async def reject(event):
    from tukio import TukioTaskError

    raise TukioTaskError({{"why": "rejected"}})


@register("{p}interrupt")
async def interrupt(event):
    """Press Ctrl-C on its own process, then wait."""
    import os
    import signal

    os.kill(os.getpid(), signal.SIGINT)
    await asyncio.Event().wait()


@register("{p}chatty")
async def chatty(event):
    """Print a line of its own."""
    print("chatty says hello")
    return None


@register("{p}touch", "run")
class Touch(TaskHolder):
    """Write the file named by the config's 'path'."""

    async def run(self, event):
        pathlib.Path(self.config["path"]).write_text("ran")
        return event.data


@register("{p}picky", "run")
class Picky(TaskHolder):
    def __init__(self, config):
        super().__init__(config)
        if "needed" not in self.config:
            raise KeyError("needed")

    async def run(self, event):
        """Do nothing, picky about its config."""
'''


class Env:
    """A test's task module (written on demand) and workflow files."""

    def __init__(self, tmp_path: Path, prefix: str) -> None:
        self.tmp = tmp_path
        self.p = prefix
        self.stem = f"cli_test_module_{next(_modules)}"
        self.module = str(tmp_path / f"{self.stem}.py")
        (tmp_path / f"{self.stem}.py").write_text(MODULE.format(p=prefix))

    def workflow(
        self,
        tasks: list[tuple[str, str] | tuple[str, str, dict[str, Any]]],
        graph: dict[str, list[str]],
        name: str = "wf.json",
        **fields: Any,
    ) -> str:
        """Write a workflow file; task names are given without the prefix."""
        task_dicts = []
        for item in tasks:
            extra = item[2] if len(item) == 3 else {}  # type: ignore[misc]
            task_dicts.append({"id": item[0], "name": self.p + item[1], **extra})
        path = self.tmp / name
        path.write_text(json.dumps({"id": "wf", "tasks": task_dicts, "graph": graph, **fields}))
        return str(path)

    def write(self, name: str, text: str) -> str:
        path = self.tmp / name
        path.write_text(text)
        return str(path)


@pytest.fixture
def env(tmp_path: Path, task_name: Callable[[str], str]) -> Iterator[Env]:
    """A module of uniquely named tasks; its registrations are undone after the test."""
    before = set(TaskRegistry.all())
    environment = Env(tmp_path, task_name("cli") + "-")
    yield environment
    for name in set(TaskRegistry.all()) - before:
        TaskRegistry.unregister(name)
    sys.modules.pop(environment.stem, None)
    while str(tmp_path) in sys.path:
        sys.path.remove(str(tmp_path))


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tukio", *args], capture_output=True, text=True, timeout=30, check=False, cwd=ROOT
    )


# -- subprocesses ------------------------------------------------------------------------
def test_version_and_help_in_a_subprocess() -> None:
    out = cli("--version")
    assert out.returncode == 0
    assert out.stdout.strip() == f"tukio {tukio.__version__}"
    out = cli("--help")
    assert out.returncode == 0
    for command in COMMANDS:
        assert command in out.stdout
    assert "2  bad input" in out.stdout


def test_example_runs_and_validates_in_a_subprocess(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    data = '{"order_id": 7, "items": ["book", "lamp"]}'
    out = cli("run", "examples/tasks.py", "examples/workflow.json", "--data", data, "--report", str(report))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "workflow shop-order: begin"
    assert "[load] begin" in lines
    assert "[receipt] skipped" in lines
    assert "workflow shop-order: ended finished" in lines
    states = {t["id"]: t["exec"]["state"] for t in json.loads(report.read_text())["tasks"]}
    assert states == dict.fromkeys(("load", "stock", "price", "gather", "charge", "ship"), "finished") | {
        "receipt": "skipped"
    }
    out = cli("validate", "--modules", "examples/tasks.py", "examples/workflow.json")
    assert (out.returncode, out.stdout) == (0, "examples/workflow.json: ok (7 tasks)\n")


def test_bad_input_exits_2_in_a_subprocess() -> None:
    out = cli("run", "no_such_module_here", "examples/workflow.json")
    assert out.returncode == 2
    assert "unknown module: no_such_module_here" in out.stderr
    assert cli("frobnicate").returncode == 2


def test_ctrl_c_cancels_the_workflow_and_writes_the_report(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tukio",
            "run",
            str(FIXTURES / "cli_hold.py"),
            str(FIXTURES / "cli_hold.json"),
            "--report",
            str(report),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    watchdog = threading.Timer(20, proc.kill)
    watchdog.start()
    try:
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:  # the task is running once its begin line is out
            seen.append(line)
            if line.strip() == "[hold] begin":
                break
        else:
            pytest.fail(f"no readiness line: {seen}")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        watchdog.cancel()
    assert proc.returncode == 1, err
    assert "interrupted: cancelling the workflow" in err
    assert "Traceback" not in err
    assert "workflow hold-forever cancelled" in out
    written = json.loads(report.read_text())
    assert written["exec"]["state"] == "cancelled"
    assert [t["exec"]["state"] for t in written["tasks"]] == ["finished", "cancelled"]


def run_with_stdout_closed(*args: str, cwd: Path = ROOT) -> tuple[int, str]:
    """Run ``python -m tukio ARGS`` with a stdout pipe whose reader is already gone.

    Returns the exit code and the standard error.
    """
    read_end, write_end = os.pipe()
    os.close(read_end)  # what `| head -1` leaves behind once it has exited
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "tukio", *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=30,
            check=False,
            cwd=cwd,
        )
    finally:
        os.close(write_end)
    return proc.returncode, proc.stderr


def test_show_ends_quietly_when_stdout_is_closed() -> None:
    code, err = run_with_stdout_closed("show", str(FIXTURES / "cli_hold.py"))
    assert (code, err) == (141, "")


def test_run_cancels_the_workflow_quietly_when_stdout_is_closed(tmp_path: Path) -> None:
    # The 'hold' task never ends by itself: only the closed pipe can end this run.
    report = tmp_path / "report.json"
    code, err = run_with_stdout_closed(
        "run", str(FIXTURES / "cli_hold.py"), str(FIXTURES / "cli_hold.json"), "--report", str(report)
    )
    assert (code, err) == (141, "")
    written = json.loads(report.read_text())
    assert written["exec"]["state"] == "cancelled"


def test_head_reads_the_first_line_and_the_run_ends(tmp_path: Path) -> None:
    # As `tukio run ... | head -1`: the reader leaves after one line, the task is still holding.
    proc = subprocess.Popen(
        [sys.executable, "-m", "tukio", "run", str(FIXTURES / "cli_hold.py"), str(FIXTURES / "cli_hold.json")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    watchdog = threading.Timer(20, proc.kill)
    watchdog.start()
    try:
        assert proc.stdout is not None
        assert proc.stderr is not None
        seen = []
        for line in proc.stdout:  # every live line is out once the hold task has begun
            seen.append(line)
            if line.strip() == b"[hold] begin":
                break
        else:
            pytest.fail(f"no readiness line: {seen}")
        proc.stdout.close()
        # The next line the command prints meets the closed pipe: Ctrl-C makes one ("[hold] cancelled").
        proc.send_signal(signal.SIGINT)
        err = proc.stderr.read()
        proc.stderr.close()
        proc.wait(timeout=20)
    finally:
        watchdog.cancel()
    assert proc.returncode == 141
    assert b"Traceback" not in err
    assert b"Error" not in err


@pytest.mark.skipif(not (Path(sys.executable).parent / "tukio").is_file(), reason="the tukio script is not installed")
def test_the_console_script_finds_modules_in_the_current_directory(tmp_path: Path) -> None:
    (tmp_path / "cli_cwd_tasks.py").write_text(
        'from tukio import register\n\n\n@register(\'cli-cwd-task\')\nasync def t(event):\n    """Found here."""\n'
    )
    script = str(Path(sys.executable).parent / "tukio")
    out = subprocess.run(
        [script, "show", "cli_cwd_tasks"], capture_output=True, text=True, timeout=30, check=False, cwd=tmp_path
    )
    assert (out.returncode, out.stdout, out.stderr) == (0, "cli-cwd-task  Found here.\n", "")
    out = subprocess.run(
        [script, "show", "cli_cwd_nothing"], capture_output=True, text=True, timeout=30, check=False, cwd=tmp_path
    )
    assert out.returncode == 2
    assert "tukio: error: unknown module: cli_cwd_nothing" in out.stderr
    assert "looked for cli_cwd_nothing.py and cli_cwd_nothing/__init__.py in:" in out.stderr
    assert f"  {tmp_path} (the current directory)" in out.stderr


# -- main() in process: global options ------------------------------------------------------
@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_exit_codes(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert f"usage: tukio {command}" in out
    assert "exit codes:" in out
    # Each command lists the exit codes it can return, and only those.
    assert ("1  a workflow ended with a failed" in out) is (command in ("run", "recover"))
    assert "    2  " in out
    assert "  141  the standard output was closed by its reader" in out


def test_python_dash_m_tukio_runs_main(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "argv", ["tukio", "--version"])
    with pytest.raises(SystemExit) as exc:
        runpy.run_module("tukio", run_name="__main__")
    assert exc.value.code == 0
    assert capsys.readouterr().out == f"tukio {tukio.__version__}\n"


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: tukio" in capsys.readouterr().err


# -- validate -----------------------------------------------------------------------------------
def test_validate_reports_every_problem_of_every_file(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    good = env.workflow([("a", "ok")], {"a": []}, name="good.json")
    bad_json = env.write("bad.json", '{"tasks": [}')
    invalid = env.write(
        "invalid.json",
        json.dumps({"tasks": [{"id": "a", "name": "x", "timeout": -1}, {"id": "b"}], "graph": {"a": ["zz"], "b": []}}),
    )
    two_roots = env.workflow([("a", "ok"), ("b", "ok")], {"a": [], "b": []}, name="roots.json")
    missing = str(env.tmp / "missing.json")
    assert main(["validate", good, bad_json, invalid, two_roots, missing]) == 2
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{good}: ok (1 task)"
    assert lines[1] == f"{bad_json}: json: line 1 column 12: Expecting value"
    assert f"{invalid}: tasks[0].timeout: must be a positive number, got -1" in lines
    assert any(line.startswith(f"{invalid}: tasks[1].name: missing") for line in lines)
    assert f"{invalid}: graph.a: unknown task id 'zz'" in lines
    assert f"{two_roots}: graph: 2 root tasks (a, b), expected 1" in lines
    assert lines[-1].startswith(f"{missing}: cannot read workflow: No such file")


def test_validate_with_modules_checks_task_names(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    path = env.workflow([("a", "ok"), ("b", "nope")], {"a": ["b"]})
    assert main(["validate", path]) == 0
    capsys.readouterr()
    assert main(["validate", "-q", "--modules", env.module, path]) == 2
    assert capsys.readouterr().out == f"{path}: tasks[1].name: unknown task name '{env.p}nope'\n"
    assert main(["validate", "--modules", "no.such.module", path]) == 2
    assert "unknown module: no.such.module" in capsys.readouterr().err


# -- show -------------------------------------------------------------------------------------
def test_show_lists_the_tasks_a_module_registers(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", env.module]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = [line.split()[0] for line in lines]
    assert names == [
        env.p + n for n in ("ok", "boom", "hold", "skip", "flaky", "reject", "interrupt", "chatty", "touch", "picky")
    ]
    width = len(env.p + "interrupt")
    assert lines[0] == f"{env.p + 'ok':<{width}}  Mark the data as seen."
    assert lines[2] == env.p + "hold"  # no docstring
    assert lines[-2].endswith("Write the file named by the config's 'path'.")
    assert lines[-1].endswith("Do nothing, picky about its config.")  # class without docstring: the method's
    # Already imported, by its dotted name this time: found all the same.
    assert main(["show", env.stem]) == 0
    assert capsys.readouterr().out.splitlines() == lines


def test_show_a_module_without_tasks(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", "json"]) == 0
    assert capsys.readouterr().out == "json: registers no task\n"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (None, "module file not found"),
        ("import no_such_dependency_xyz\n", "cannot import module .*ModuleNotFoundError.*no_such_dependency_xyz"),
        ("raise RuntimeError('broken at import')\n", "cannot import module .*RuntimeError: broken at import"),
        ("def f(:\n", "cannot import module .*SyntaxError"),
    ],
)
def test_show_reports_modules_that_cannot_be_imported(
    env: Env, capsys: pytest.CaptureFixture[str], source: str | None, message: str
) -> None:
    stem = f"cli_broken_{next(_modules)}"
    path = env.tmp / f"{stem}.py"
    if source is not None:
        path.write_text(source)
    try:
        assert main(["show", str(path)]) == 2
    finally:
        sys.modules.pop(stem, None)
    assert re.search(message, capsys.readouterr().err)


def test_a_dotted_name_is_looked_for_in_the_current_directory(
    env: Env, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # As the console script starts: its own folder on sys.path, not the current directory.
    monkeypatch.chdir(env.tmp)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".") and Path(p).resolve() != env.tmp])
    assert main(["show", env.stem]) == 0
    assert capsys.readouterr().out.startswith(f"{env.p}ok ")
    assert sys.path[0] == str(env.tmp)


def test_an_unknown_module_error_says_where_it_looked(
    env: Env, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(env.tmp)
    assert main(["show", "no_such_module_xyz"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "tukio: error: unknown module: no_such_module_xyz"
    assert err[1] == "  looked for no_such_module_xyz.py and no_such_module_xyz/__init__.py in:"
    assert f"    {env.tmp} (the current directory)" in err
    assert err[-1] == "  give the path of the .py file, or run tukio from the folder that holds it"
    # In a package: where that package lives.
    assert main(["show", "json.no_such_part"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[1] == "  looked for no_such_part.py and no_such_part/__init__.py in:"
    assert err[2] == f"    {Path(json.__file__).parent}"


def test_a_file_shadowed_by_an_imported_module_is_refused(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", env.write("json.py", "")]) == 2
    assert "the name 'json' is already taken" in capsys.readouterr().err


# -- run ------------------------------------------------------------------------------------------
def test_run_prints_transitions_and_a_summary(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    path = env.workflow([("a", "ok"), ("b", "skip"), ("c", "ok")], {"a": ["b"], "b": ["c"]}, title="demo")
    assert main(["run", env.module, path, "--data", '{"x": 1}']) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[:7] == [
        "workflow wf: begin",
        "[a] begin",
        "[a] finished",
        "[b] begin",
        "[b] skipped",
        "[c] begin",
        "[c] finished",
    ]
    assert lines[7] == "workflow wf: ended finished"
    assert lines[9].split() == ["TASK", "NAME", "STATE", "DURATION", "ERROR"]
    assert lines[10].split()[:3] == ["a", env.p + "ok", "finished"]
    assert lines[11].split()[:3] == ["b", env.p + "skip", "skipped"]
    assert lines[11].endswith("  nothing to do")  # the reason, not "SkipTask: nothing to do"
    assert "SkipTask" not in out
    assert lines[-1].startswith("workflow wf finished in ")


def test_run_verbose_shows_the_data(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    path = env.workflow([("a", "ok")], {"a": []})
    assert main(["run", env.module, path, "-vv", "--data", '{"x": 1}']) == 0
    captured = capsys.readouterr()
    assert "[a] begin inputs={'x': 1}" in captured.out
    assert "[a] finished outputs={'x': 1, 'seen': True}" in captured.out
    assert "INFO tukio" in captured.err


def test_a_failing_task_exits_1_and_the_report_says_why(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    path = env.workflow([("a", "ok"), ("b", "boom"), ("c", "ok")], {"a": ["b"], "b": ["c"]})
    report = env.tmp / "out" / "report.json"
    report.parent.mkdir()
    assert main(["run", env.module, path, "--report", str(report), "--data", '{"x": 1}']) == 1
    out = capsys.readouterr().out
    assert "[b] failed: ValueError: boom" in out
    assert f"report written to {report}" in out
    written = json.loads(report.read_text())
    assert written["exec"]["state"] == "finished"
    a, b, c = written["tasks"]
    assert a["exec"]["outputs"] == {"x": 1, "seen": True}
    datetime.fromisoformat(a["exec"]["start"])
    assert (b["exec"]["state"], b["exec"]["error"]) == ("exception", "ValueError: boom")
    assert c["exec"] is None


def test_timeout_cancels_the_workflow(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    path = env.workflow([("a", "hold")], {"a": []})
    assert main(["run", env.module, path, "--timeout", "0.05"]) == 1
    captured = capsys.readouterr()
    assert "timeout: cancelling the workflow after 0.05 s" in captured.err
    lines = captured.out.splitlines()
    # tukio sends no event for a cancelled task: the command still says what became of it.
    assert lines[:4] == ["workflow wf: begin", "[a] begin", "[a] cancelled", "workflow wf: ended cancelled"]
    assert captured.out.splitlines()[-1].startswith("workflow wf timeout in")


def test_data_from_a_file_and_a_topic(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    path = env.workflow([("a", "ok")], {"a": []}, topics=["orders"])
    data = env.write("data.json", '{"from": "file"}')
    assert main(["run", env.module, path, "--data", f"@{data}", "--topic", "orders", "-v"]) == 0
    assert "[a] begin inputs={'from': 'file'}" in capsys.readouterr().out
    assert main(["run", env.module, path, "--topic", "other"]) == 2
    assert "is not triggered by data on topic 'other'" in capsys.readouterr().err
    assert main(["run", env.module, path, "--dry-run", "--topic", "other"]) == 2


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("{x", "--data: not JSON: line 1 column 2"),
        ("[1, 2]", "--data: the data must be a JSON object, got list"),
        ("@missing.json", "missing.json: cannot read data: No such file"),
        ("@bad.json", "bad.json: json: line 1 column 1: Expecting value"),
        ("@list.json", "list.json: the data must be a JSON object, got list"),
    ],
)
def test_bad_data_exits_2(env: Env, capsys: pytest.CaptureFixture[str], data: str, message: str) -> None:
    path = env.workflow([("a", "ok")], {"a": []})
    env.write("bad.json", "oops")
    env.write("list.json", "[]")
    if data.startswith("@"):
        data = "@" + str(env.tmp / data[1:])
    assert main(["run", env.module, path, "--data", data]) == 2
    assert message in capsys.readouterr().err


def test_bad_workflows_exit_2(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    unknown = env.workflow([("a", "ok"), ("b", "nope")], {"a": ["b"]})
    assert main(["run", env.module, unknown]) == 2
    err = capsys.readouterr().err
    assert f"tukio: error: {unknown}: workflow cannot run" in err
    assert f"  {unknown}: tasks[1].name: unknown task name '{env.p}nope'" in err
    invalid = env.write("invalid.json", '{"tasks": [{"id": "a"}], "graph": {"a": "b"}}')
    assert main(["run", env.module, invalid]) == 2
    err = capsys.readouterr().err
    assert "invalid workflow template" in err
    assert f"{invalid}: graph.a: successors must be a list, got str" in err
    assert main(["run", env.module, env.write("bad.json", "{")]) == 2
    assert main(["run", env.module, str(env.tmp / "nothing.json")]) == 2
    assert main(["run", "no_such_module_xyz", unknown]) == 2
    assert main(["run", env.module, unknown, "--timeout", "-1"]) == 2
    assert main(["run", env.module, unknown, "--timeout", "soon"]) == 2


def test_dry_run_builds_everything_and_runs_nothing(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    touched = env.tmp / "touched"
    path = env.workflow(
        [
            ("a", "ok"),
            ("t", "touch", {"config": {"path": str(touched)}, "timeout": 2}),
            ("p", "picky", {"config": {"needed": 1}, "retry": {"max_attempts": 3}}),
        ],
        {"a": ["t", "p"]},
        title="dry",
    )
    assert main(["run", env.module, path, "--dry-run", "--data", '{"x": 1}']) == 0
    out = capsys.readouterr().out
    assert not touched.exists()
    lines = out.splitlines()
    assert lines[0] == "dry run of workflow wf (dry)"
    assert "data: {'x': 1}" in lines[2]
    rows = [line.split() for line in lines[4:7]]
    assert [r[:3] for r in rows] == [["1", "a", env.p + "ok"], ["2", "t", env.p + "touch"], ["3", "p", env.p + "picky"]]
    assert rows[0][-2:] == ["t,", "p"]
    assert "holder Touch.run" in lines[5]
    assert "2 s" in lines[5]
    assert "3 attempts" in lines[6]
    assert lines[-1] == "3 tasks resolved and built; no task was run"
    # The same workflow for real does write the file.
    assert main(["run", env.module, path]) == 0
    assert touched.read_text() == "ran"


def test_dry_run_reports_holders_that_cannot_be_built(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    path = env.workflow([("a", "picky"), ("b", "picky")], {"a": ["b"]})
    assert main(["run", env.module, path, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert f"{path}: task a ({env.p}picky): cannot build: KeyError: 'needed'" in err
    assert f"{path}: task b ({env.p}picky): cannot build" in err


def test_an_unwritable_report_exits_2_before_anything_runs(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    touched = env.tmp / "touched"
    path = env.workflow([("t", "touch", {"config": {"path": str(touched)}})], {"t": []})
    missing = env.tmp / "no" / "dir" / "r.json"
    assert main(["run", env.module, path, "--report", str(missing)]) == 2
    captured = capsys.readouterr()
    assert f"{missing}: cannot write the report: no such directory" in captured.err
    assert captured.out == ""
    assert not touched.exists()
    assert main(["run", env.module, path, "--report", str(env.tmp)]) == 2
    assert "cannot write the report: it is a directory" in capsys.readouterr().err
    assert not touched.exists()


def test_a_report_folder_removed_during_the_run_exits_2(
    env: Env, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Checked before the run, the folder can still go away during it: a clear error then too.
    path = env.workflow([("a", "ok")], {"a": []})
    report = env.tmp / "out" / "r.json"
    report.parent.mkdir()
    real_run = asyncio.run

    def run_then_break_the_folder(coro: Any) -> Any:
        result = real_run(coro)
        report.parent.rmdir()
        return result

    monkeypatch.setattr(asyncio, "run", run_then_break_the_folder)
    assert main(["run", env.module, path, "--report", str(report)]) == 2
    assert f"{report}: cannot write the report: No such file or directory" in capsys.readouterr().err


def test_live_lines_come_before_what_the_task_prints(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    path = env.workflow([("a", "chatty"), ("b", "chatty")], {"a": ["b"]})
    assert main(["run", env.module, path]) == 0
    assert capsys.readouterr().out.splitlines()[:8] == [
        "workflow wf: begin",
        "[a] begin",
        "chatty says hello",
        "[a] finished",
        "[b] begin",
        "chatty says hello",
        "[b] finished",
        "workflow wf: ended finished",
    ]


def test_run_journals_in_a_store_that_inspect_reads(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    path = env.workflow([("a", "ok"), ("b", "boom")], {"a": ["b"]})
    store = str(env.tmp / "journal.db")
    assert main(["run", env.module, path, "--store", store, "--data", '{"x": 1}']) == 1
    last = capsys.readouterr().out.splitlines()[-1]
    match = re.fullmatch(rf"journaled in {re.escape(store)} as execution (\S+)", last)
    assert match is not None, last
    exec_id = match.group(1)
    assert main(["inspect", "--store", store]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["EXEC_ID", "STATE", "TEMPLATE", "VERSION", "NODE", "START", "END", "ERROR"]
    assert lines[1].split()[:3] == [exec_id, "finished", "wf"]
    assert main(["inspect", "--store", store, exec_id]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [t["exec"]["state"] for t in report["tasks"]] == ["finished", "exception"]
    assert report["tasks"][1]["exec"]["error"] == "ValueError: boom"
    assert main(["inspect", "--store", store, "--state", "finished"]) == 0
    assert exec_id in capsys.readouterr().out


def test_inspect_refuses_an_unknown_state(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    store = str(env.tmp / "journal.db")
    assert main(["run", env.module, env.workflow([("a", "ok")], {"a": []}), "--store", store]) == 0
    capsys.readouterr()
    assert main(["inspect", "--store", store, "--state", "bogus"]) == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'bogus'" in err
    for state in ("pending", "finished", "exception", "cancelled", "timeout"):
        assert state in err


def test_inspect_shows_the_error_of_a_failed_execution(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tukio.store import SQLiteStore
    from tukio.store.base import ExecutionRecord

    path = str(tmp_path / "j.db")
    with SQLiteStore(path) as store:
        store.write([ExecutionRecord("x1", "wf", "exception", None, None, "WorkflowRootTaskError: no root")])
    assert main(["inspect", "--store", path]) == 0
    line = capsys.readouterr().out.splitlines()[1]
    assert line.split()[:3] == ["x1", "exception", "wf"]
    assert line.endswith("WorkflowRootTaskError: no root")


def test_run_refuses_a_store_it_cannot_open(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    path = env.workflow([("a", "ok")], {"a": []})
    assert main(["run", env.module, path, "--store", str(env.tmp / "no" / "dir" / "j.db")]) == 2
    assert "cannot open the store" in capsys.readouterr().err


# -- the live output --------------------------------------------------------------------------------
class _ClosedPipe(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


async def test_live_output_holds_what_tasks_print_for_one_loop_turn(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    with (tmp_path / "out.txt").open("w+", encoding="utf-8") as stream:
        output = LiveOutput(stream, loop, lambda: pytest.fail("the stream is fine"))
        assert output.writable()
        assert output.encoding == "utf-8"
        assert output.fileno() == stream.fileno()
        assert output.isatty() is False
        print("from a task", file=output)
        output.flush()
        output.line("[a] begin")
        released = loop.create_future()
        # From another thread too (a task in an executor), in order.
        await loop.run_in_executor(None, lambda: output.write("from a thread\n"))
        loop.call_soon(released.set_result, None)
        await released
        stream.seek(0)
        assert stream.read() == "[a] begin\nfrom a task\nfrom a thread\n"


async def test_live_output_drops_everything_once_the_reader_is_gone() -> None:
    loop = asyncio.get_running_loop()
    gone: list[bool] = []
    output = LiveOutput(_ClosedPipe(), loop, lambda: gone.append(True))
    output.write("held")
    output.line("[a] begin")
    assert output.broken
    assert gone == [True]
    output.line("[a] finished")
    output.write("more")
    output.release()
    assert gone == [True]  # told once
    silence_stdout(io.StringIO())  # no file behind it: nothing to redirect


# -- report_json --------------------------------------------------------------------------------------
def test_reports_become_json_whatever_they_hold() -> None:
    class Color(enum.Enum):
        red = 1

    @dataclasses.dataclass
    class Point:
        x: int
        where: Path

    class Thing:
        def __repr__(self) -> str:
            return "<thing>"

    loop: dict[str, Any] = {"self": None}
    loop["self"] = loop
    when = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
    value = {
        "when": when,
        "error": ValueError("bad"),
        "bare": KeyError(),
        "set": {3, 1},
        "tuple": (1, 2),
        "event": Event({"a": 1}),
        "source": EventSource("w", "x"),
        "state": tukio.FutureState.finished,
        "nan": math.nan,
        "bytes": b"hi",
        "thing": Thing(),
        "loop": loop,
        2: "int key",
        "more": [timedelta(seconds=1.5), Color.red, uuid.UUID(int=1), Point(1, Path("/p"))],
    }
    assert to_jsonable(value) == {
        "when": "2024-05-01T12:00:00+00:00",
        "error": "ValueError: bad",
        "bare": "KeyError",
        "set": [1, 3],
        "tuple": [1, 2],
        "event": {"a": 1},
        "source": {
            "workflow_template_id": "w",
            "workflow_exec_id": "x",
            "task_template_id": None,
            "task_exec_id": None,
        },
        "state": "finished",
        "nan": "nan",
        "bytes": "hi",
        "thing": "<thing>",
        "loop": {"self": "<cycle>"},
        "2": "int key",
        "more": [1.5, 1, "00000000-0000-0000-0000-000000000001", {"x": 1, "where": "/p"}],
    }
    assert json.loads(dumps_report({"when": when}, indent=None)) == {"when": "2024-05-01T12:00:00+00:00"}


def test_retries_progress_and_task_errors_are_printed(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    retry = {"retry": {"max_attempts": 2, "delay": 0.01}}
    path = env.workflow([("f", "flaky", retry), ("r", "reject")], {"f": ["r"]})
    assert main(["run", env.module, path, "-v"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert "[f] attempt 1 failed (ConnectionError: reset), retrying in 0.01 s" in lines
    assert "[f] progress: {'pct': 50}" in lines
    assert "[r] failed outputs={'why': 'rejected'}" in lines


def test_ctrl_c_in_process_cancels_the_workflow(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    path = env.workflow([("a", "ok"), ("i", "interrupt")], {"a": ["i"]})
    report = env.tmp / "r.json"
    assert main(["run", env.module, path, "--report", str(report), "--timeout", "30"]) == 1
    captured = capsys.readouterr()
    assert "interrupted: cancelling the workflow" in captured.err
    assert "[i] cancelled\nworkflow wf: ended cancelled\n" in captured.out
    assert [t["exec"]["state"] for t in json.loads(report.read_text())["tasks"]] == ["finished", "cancelled"]
