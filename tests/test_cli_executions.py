"""``tukio executions ...`` and ``tukio recover``: managing journaled executions from the command line."""

# ruff: noqa: F811 - the tests take test_cli's fixture `env`, imported here

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_cli import (
    FIXTURES,
    Env,
    env,  # noqa: F401 - the fixture (its parameters below redefine the name)
)

from tukio.cli import main
from tukio.store import SQLiteStore
from tukio.store.base import ExecutionRecord

Capture = pytest.CaptureFixture[str]


def run_and_journal(env: Env, tasks: list[tuple[str, str]], capsys: Capture) -> tuple[str, str, int]:
    """``tukio run`` a chain of `tasks` journaled in a store: (store, execution id, exit code)."""
    ids = [t[0] for t in tasks]
    workflow = env.workflow(tasks, {a: [b] for a, b in itertools.pairwise(ids)})
    store = str(env.tmp / "journal.db")
    code = main(["run", env.module, workflow, "--store", store])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    return store, last.rsplit(" ", 1)[-1], code


def test_a_run_whose_root_raised_is_listed_with_its_failure(env: Env, capsys: Capture) -> None:
    store, exec_id, code = run_and_journal(env, [("a", "boom"), ("b", "ok")], capsys)
    assert code == 1
    assert main(["executions", "list", "--store", store]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["EXEC_ID", "STATE", "TEMPLATE", "VERSION", "NODE", "START", "END", "ERROR"]
    assert lines[1].split()[:3] == [exec_id, "finished", "wf"]
    assert lines[1].endswith("task a: ValueError: boom")
    for command in (["executions", "list"], ["inspect"]):
        assert main([*command, "--store", store, "--state", "exception", "--json"]) == 0
        found = json.loads(capsys.readouterr().out)
        items = found["items"] if isinstance(found, dict) else found
        assert [(i["id"], i["state"], i["failed"]) for i in items] == [(exec_id, "finished", True)]
    assert main(["executions", "list", "--store", store, "--not-failed"]) == 0
    assert capsys.readouterr().out == f"{store}: no executions\n"


def test_run_says_why_it_exits_non_zero(env: Env, capsys: Capture) -> None:
    workflow = env.workflow([("a", "boom")], {})
    assert main(["run", env.module, workflow]) == 1
    assert capsys.readouterr().err.splitlines()[-1] == "tukio: exit status 1: task a ended exception: ValueError: boom"


def test_show(env: Env, capsys: Capture) -> None:
    store, exec_id, _ = run_and_journal(env, [("a", "ok"), ("b", "boom")], capsys)
    assert main(["executions", "show", "--store", store, exec_id]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"execution {exec_id}"
    assert out[2] == "  state     finished (failed)"
    task_lines = out[out.index("") + 1 :]
    assert task_lines[0].split() == ["TASK", "NAME", "STATE", "ATTEMPTS", "START", "END", "ERROR"]
    assert task_lines[2].endswith("ValueError: boom")
    assert main(["executions", "show", "--store", store, exec_id, "--json"]) == 0
    detail = json.loads(capsys.readouterr().out)
    assert [(t["id"], t["state"]) for t in detail["tasks"]] == [("a", "finished"), ("b", "exception")]
    assert detail["graph"] == {"a": ["b"], "b": []}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["show", "nope"], "no execution 'nope' in the store"),
        (["list", "--since", "yesterday"], "--since: not an ISO 8601 time: 'yesterday'"),
        (["list", "--limit", "0"], "limit must be an integer from 1 to 1000"),
        (["list", "--after", "zz"], "invalid cursor 'zz'"),
        (["cancel", "nope", "--yes"], "no execution 'nope' in the store"),
        (["delete"], "which executions? give EXEC_IDs, filters, or --all"),
        (["delete", "x", "--template", "t"], "give EXEC_IDs or filters (or --all), not both"),
    ],
)
def test_bad_input_is_named(tmp_path: Path, capsys: Capture, args: list[str], message: str) -> None:
    store = str(tmp_path / "j.db")
    SQLiteStore(store).close()
    assert main(["executions", args[0], "--store", store, *args[1:]]) == 2
    assert message in capsys.readouterr().err


def test_a_store_that_does_not_exist(tmp_path: Path, capsys: Capture) -> None:
    assert main(["executions", "list", "--store", str(tmp_path / "nope.db")]) == 2
    assert capsys.readouterr().err == f"tukio: error: {tmp_path / 'nope.db'}: no such store\n"
    assert not (tmp_path / "nope.db").exists()


def _journal(path: str, *records: ExecutionRecord) -> None:
    with SQLiteStore(path) as store:
        store.write(list(records))


def test_destructive_actions_confirm_and_dry_run(tmp_path: Path, capsys: Capture) -> None:
    store = str(tmp_path / "j.db")
    start = "2026-01-01T00:00:00.000000+00:00"
    _journal(
        store,
        ExecutionRecord("left", "t", "pending", start, None),
        ExecutionRecord("old", "t", "finished", start, start),
    )
    assert main(["executions", "cancel", "--store", store, "left", "--dry-run"]) == 0
    assert capsys.readouterr().out == "would cancel left\n"
    assert main(["executions", "delete", "--store", store, "--all", "--dry-run"]) == 0
    assert capsys.readouterr().out == "would delete old\n"  # an unfinished one is never deleted
    assert main(["executions", "cancel", "--store", store, "left"]) == 2  # no terminal to confirm on
    assert "needs a confirmation: the input is not a terminal; pass --yes" in capsys.readouterr().err
    assert main(["executions", "cancel", "--store", store, "--state", "pending", "--yes"]) == 0
    assert capsys.readouterr().out == "left: cancelled\n"  # no live node owns it: marked cancelled
    assert main(["executions", "delete", "--store", store, "--template", "t", "--yes"]) == 0
    assert capsys.readouterr().out == "old: deleted\nleft: deleted\n"  # newest first, then by id
    assert main(["inspect", "--store", store]) == 0
    assert capsys.readouterr().out == f"{store}: no executions\n"


def test_prune_has_a_dry_run_and_a_confirmation(tmp_path: Path, capsys: Capture) -> None:
    store = str(tmp_path / "j.db")
    start = "2026-01-01T00:00:00.000000+00:00"
    _journal(store, ExecutionRecord("old", "t", "finished", start, start))
    assert main(["inspect", "--store", store, "--prune", "--dry-run"]) == 0
    assert capsys.readouterr().out == f"{store}: would prune 1 finished execution(s)\n"
    assert main(["inspect", "--store", store, "--prune"]) == 2
    assert "pass --yes" in capsys.readouterr().err
    assert main(["inspect", "--store", store, "--json"]) == 0
    assert [i["id"] for i in json.loads(capsys.readouterr().out)] == ["old"]


def test_retry_then_recover_runs_the_new_execution(env: Env, capsys: Capture) -> None:
    store, exec_id, code = run_and_journal(env, [("a", "ok"), ("b", "flaky")], capsys)  # flaky fails once
    assert code == 1
    assert main(["executions", "retry", "--store", store, exec_id, "--from-task", "b", "--yes"]) == 0
    new_id = capsys.readouterr().out.splitlines()[0].rsplit(" ", 1)[-1]
    workflow = str(env.tmp / "wf.json")
    assert main(["recover", env.module, workflow, "--store", store]) == 0
    out = capsys.readouterr().out
    assert f"workflow wf finished (execution {new_id})" in out
    assert main(["executions", "show", "--store", store, new_id, "--json"]) == 0
    assert [t["state"] for t in json.loads(capsys.readouterr().out)["tasks"]] == ["finished", "finished"]
    assert main(["recover", env.module, workflow, "--store", store]) == 0
    assert capsys.readouterr().out == f"{store}: no unfinished execution of wf to recover\n"


def test_a_killed_run_is_cancelled_from_another_process(tmp_path: Path) -> None:
    """``tukio run`` SIGKILLed mid-way: its execution stays unfinished until someone cancels it."""
    store = str(tmp_path / "j.db")
    store_option = ["--store", store]
    run = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tukio",
            "run",
            str(FIXTURES / "cli_hold.py"),
            str(FIXTURES / "cli_hold.json"),
            *store_option,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not _holding(store):
            assert run.poll() is None, "tukio run ended"
            assert time.monotonic() < deadline, "the run never reached its holding task"
            time.sleep(0.05)
    finally:
        os.kill(run.pid, signal.SIGKILL)
        run.wait(10)
    listed = subprocess.run(
        [sys.executable, "-m", "tukio", "executions", "cancel", "--store", store, "--state", "pending", "--yes"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.endswith(": cancelled\n")
    with SQLiteStore(store) as opened:
        assert [i.state for i in opened.executions()] == ["cancelled"]


def _holding(path: str) -> bool:
    """True once the journal shows the run's 'hold' task running."""
    if not os.path.exists(path):
        return False
    with SQLiteStore(path) as store:
        infos = store.executions()
        return bool(infos) and any(
            t["exec"] is not None and t["id"] == "hold" for t in store.load(infos[0].exec_id)["tasks"]
        )


class _Terminal:
    """A standard input that is a terminal, answering `answer`."""

    def __init__(self, answer: str) -> None:
        self.answer = answer

    def isatty(self) -> bool:
        return True

    def readline(self) -> str:
        return self.answer


@pytest.mark.parametrize(
    ("answer", "code", "out"), [("y\n", 0, "old: deleted\n"), ("\n", 1, "aborted: nothing done\n")]
)
def test_the_confirmation_on_a_terminal(
    tmp_path: Path, capsys: Capture, monkeypatch: pytest.MonkeyPatch, answer: str, code: int, out: str
) -> None:
    store = str(tmp_path / "j.db")
    start = "2026-01-01T00:00:00.000000+00:00"
    _journal(store, ExecutionRecord("old", "t", "finished", start, start))
    monkeypatch.setattr(sys, "stdin", _Terminal(answer))
    assert main(["executions", "delete", "--store", store, "old"]) == code
    captured = capsys.readouterr()
    assert captured.out == out
    assert captured.err == f"delete 1 execution(s) in {store}? [y/N] "
