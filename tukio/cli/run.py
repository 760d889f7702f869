"""``tukio run MODULE WORKFLOW.json``: run a workflow once and report on it."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sqlite3
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tukio.broker import get_broker
from tukio.cli._common import (
    EXIT_BAD_INPUT,
    EXIT_BROKEN_PIPE,
    EXIT_FAILED,
    EXIT_MEANINGS,
    EXIT_OK,
    InputError,
    add_command,
    check_runnable,
    import_module,
    load_template,
    parse_data,
    table,
)
from tukio.cli._dryrun import dry_run
from tukio.cli._output import LiveOutput
from tukio.engine import Engine
from tukio.event import Event
from tukio.graph import format_duration, node_states, run_duration
from tukio.report_json import describe_exception, dumps_report, to_jsonable
from tukio.utils import SkipTask
from tukio.workflow.template import WorkflowTemplate
from tukio.workflow.workflow import Workflow

if TYPE_CHECKING:
    from tukio.store.base import Store

__all__ = ["EventPrinter", "Outcome", "add_parser", "execute", "exit_code", "failure", "run", "summary"]

_OK_STATES = frozenset({"finished", "skipped"})
_TASK_ENDS = frozenset({"task-end", "task-skip", "task-timeout", "task-error"})
_SHOWN = 200  # characters of data shown per line with -v
_LAST_EVENTS = 5  # seconds to wait for the last events once the workflow is done (they are already scheduled)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``run`` command."""
    parser = add_command(
        subparsers,
        "run",
        "run a workflow once",
        (
            "Import MODULE (which registers the tasks), load WORKFLOW into an engine and run it once "
            "with the given data. Each task's transitions are printed as they happen, prefixed with "
            "the task id, then a summary table. Ctrl-C cancels the workflow cleanly (the report is "
            "still written); a second Ctrl-C stops waiting for tasks that ignore cancellation. When the "
            "standard output is closed by its reader (| head), the workflow is cancelled the same way "
            "and the command ends quietly with status 141. With --store, the run is journaled in a "
            "SQLite database that 'tukio inspect' reads."
        ),
        {
            EXIT_OK: "the workflow and every task that started ended well (finished or skipped)",
            EXIT_FAILED: EXIT_MEANINGS[EXIT_FAILED],
            EXIT_BAD_INPUT: EXIT_MEANINGS[EXIT_BAD_INPUT] + ", unwritable --report or --store",
        },
    )
    parser.add_argument("module", metavar="MODULE", help="a dotted module name or the path of a .py file")
    parser.add_argument("workflow", metavar="WORKFLOW", help="the workflow template JSON file")
    parser.add_argument(
        "-d", "--data", metavar="JSON", help="the data to start with: a JSON object, or @FILE holding one (default {})"
    )
    parser.add_argument(
        "-t", "--topic", metavar="TOPIC", help="send the data on TOPIC (the workflow must listen to it)"
    )
    parser.add_argument("--timeout", type=_positive, metavar="S", help="cancel the workflow after S seconds")
    parser.add_argument("-r", "--report", metavar="OUT", help="write the workflow report to OUT as JSON")
    parser.add_argument(
        "-s",
        "--store",
        metavar="PATH",
        help="journal the run in the SQLite database PATH (created if missing; see 'tukio inspect')",
    )
    parser.add_argument(
        "-n",
        "--dry-run",
        action="store_true",
        help="check everything and build every task holder, print the plan, run no task",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="-v: show the data of each transition; -vv: also tukio's own log",
    )
    parser.set_defaults(command=run)


# -- following the run -----------------------------------------------------------------
def _short(value: Any) -> str:
    text = repr(to_jsonable(value))
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def _print_line(text: str) -> None:
    print(text, flush=True)


class EventPrinter:
    """A global broker handler printing each execution event as one line.

    Task lines start with ``[task-id]``; workflow lines with ``workflow``.
    Tasks that began but sent no end event when the workflow ends (cancelled
    by Ctrl-C or ``--timeout``: tukio sends no event for a cancelled task) get
    a ``cancelled`` line then. `ended` is set once the workflow's last event
    ('workflow-end' or 'workflow-error') was printed.

    Args:
        verbose: show the data of each transition.
        write: prints one line (``print`` when None).
    """

    def __init__(self, verbose: bool, write: Callable[[str], None] | None = None) -> None:
        self.verbose = verbose
        self.write = write if write is not None else _print_line
        self.ended = asyncio.Event()
        self._open: dict[str, None] = {}  # task ids begun and not ended, in order

    def __call__(self, event: Event) -> None:
        source, data = event.source, event.data
        kind = data.get("type")
        if source is None or source.workflow_exec_id is None or not isinstance(kind, str):
            return  # data sent to the broker, not an execution event
        content = data.get("content")
        task_id = source.task_template_id
        if task_id is not None:
            if kind == "task-begin":
                self._open[task_id] = None
            elif kind in _TASK_ENDS:
                self._open.pop(task_id, None)
            self.write(f"[{task_id}] {self._task_line(kind, content)}")
            return
        if kind in ("workflow-end", "workflow-error"):
            for left in self._open:
                self.write(f"[{left}] cancelled")
            self._open.clear()
        self.write(f"workflow {source.workflow_template_id}: {self._workflow_line(kind, content)}")
        if kind in ("workflow-end", "workflow-error"):
            self.ended.set()

    def _data(self, label: str, value: Any) -> str:
        return f" {label}={_short(value)}" if self.verbose else ""

    def _task_line(self, kind: str, content: Any) -> str:
        match kind:
            case "task-begin":
                return "begin" + self._data("inputs", content)
            case "task-end":
                return "finished" + self._data("outputs", content)
            case "task-skip":
                return "skipped" + self._data("outputs", content)
            case "task-timeout":
                return "timed out" + self._data("outputs", content)
            case "task-error":
                if isinstance(content, Mapping) and isinstance(content.get("exception"), BaseException):
                    return f"failed: {describe_exception(content['exception'])}"
                return "failed" + self._data("outputs", content)
            case "task-retry" if isinstance(content, Mapping):
                error = content.get("error")
                reason = describe_exception(error) if isinstance(error, BaseException) else str(error)
                return f"attempt {content.get('attempt')} failed ({reason}), retrying in {content.get('delay')} s"
            case _:
                return kind.removeprefix("task-") + (f": {_short(content)}" if content is not None else "")

    def _workflow_line(self, kind: str, content: Any) -> str:
        match kind:
            case "workflow-begin":
                return "begin" + self._data("data", content)
            case "workflow-end":
                cancelled = isinstance(content, Mapping) and content.get("cancel")
                return "ended cancelled" if cancelled else "ended finished"
            case "workflow-error":
                return f"error: {describe_exception(content) if isinstance(content, BaseException) else content}"
            case _:
                return kind.removeprefix("workflow-") + (f": {_short(content)}" if content is not None else "")


def summary(report: Mapping[str, Any]) -> list[str]:
    """The final table of a run: each task's state, duration and error."""
    states = node_states(report)
    rows = []
    for entry in report.get("tasks", []):
        state = states[entry["id"]]
        run = entry.get("exec") or {}
        rows.append(
            [
                entry["id"],
                str(entry.get("name", "")),
                state.state,
                format_duration(state.duration) if state.duration is not None else "-",
                _error_text(state.state, run.get("error")),
            ]
        )
    return table(["TASK", "NAME", "STATE", "DURATION", "ERROR"], rows)


def _error_text(state: str, error: Any) -> str:
    """The ERROR cell: the error, or for a skipped task the reason it gave."""
    text = str(error or "")
    return text.removeprefix(f"{SkipTask.__name__}: ") if state == "skipped" else text


def failure(report: Mapping[str, Any]) -> str | None:
    """Why the run did not end well (the workflow's state, or the first task that did not), or None."""
    run = report.get("exec") or {}
    if run.get("state") != "finished":
        error = run.get("error")
        return f"the workflow ended {run.get('state')}" + (f": {error}" if error else "")
    for entry in report.get("tasks", []):
        task_run = entry.get("exec")
        if task_run is not None and task_run.get("state") not in _OK_STATES:
            error = task_run.get("error")
            return f"task {entry.get('id')} ended {task_run.get('state')}" + (f": {error}" if error else "")
    return None


def exit_code(report: Mapping[str, Any]) -> int:
    """1 when the workflow or a task that started did not end well, else 0."""
    return EXIT_OK if failure(report) is None else EXIT_FAILED


@contextlib.contextmanager
def _tukio_logging(verbosity: int) -> Iterator[None]:
    """Show tukio's own log on stderr with -vv; hide it otherwise (events say it all)."""
    logger = logging.getLogger("tukio")
    saved = (logger.level, logger.propagate)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO if verbosity >= 2 else logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


class _Interrupts:
    """What ends a run early: Ctrl-C, and the standard output closed by its reader.

    The first Ctrl-C (or the reader going away) cancels the workflow; a
    second Ctrl-C stops waiting for tasks that ignore cancellation.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.workflow: Workflow | None = None
        self.count = 0
        self.reader_gone = False
        self.give_up: asyncio.Future[None] = loop.create_future()
        self.installed = False

    def __enter__(self) -> _Interrupts:
        try:
            self.loop.add_signal_handler(signal.SIGINT, self.interrupt)
            self.installed = True
        except (NotImplementedError, RuntimeError, ValueError):  # no signals here (Windows, a thread)
            pass
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.installed:
            self.loop.remove_signal_handler(signal.SIGINT)

    @property
    def cancelling(self) -> bool:
        """True once the workflow is to be cancelled."""
        return self.count > 0 or self.reader_gone

    def interrupt(self) -> None:
        self.count += 1
        if self.count == 1:
            print("interrupted: cancelling the workflow (Ctrl-C again to stop waiting)", file=sys.stderr, flush=True)
            if self.workflow is not None:
                self.workflow.cancel()
        elif not self.give_up.done():
            self.give_up.set_result(None)

    def stdout_closed(self) -> None:
        """The reader of the standard output is gone: cancel the workflow, quietly."""
        self.reader_gone = True
        if self.workflow is not None:
            self.workflow.cancel()


@dataclass
class Outcome:
    """What `execute` returns: the workflow's report, and whether stdout's reader went away."""

    report: dict[str, Any]
    reader_gone: bool = False


@contextlib.contextmanager
def _live_stdout(loop: asyncio.AbstractEventLoop, reader_gone: Callable[[], None]) -> Iterator[LiveOutput]:
    """Stand `LiveOutput` for ``sys.stdout`` while the workflow runs."""
    real = sys.stdout
    output = LiveOutput(real, loop, reader_gone)
    sys.stdout = output
    try:
        yield output
    finally:
        sys.stdout = real
        output.release()


async def _start(engine: Engine, template: WorkflowTemplate, data: dict[str, Any], topic: str | None) -> Workflow:
    await engine.load(template)
    if topic is None:
        workflow = await engine.trigger(template.uid, data)
    else:
        started = await engine.data_received(data, topic=topic) or []
        workflow = next((w for w in started if w.template.uid == template.uid), None)
    if workflow is None:
        raise InputError(f"workflow {template.uid} is not triggered by data on topic {topic!r}")
    return workflow


async def execute(
    template: WorkflowTemplate,
    data: dict[str, Any],
    *,
    topic: str | None,
    timeout: float | None,
    verbose: bool,
    store: Store | None = None,
) -> Outcome:
    """Run `template` once on a fresh engine (journaling in `store`); return its report."""
    loop = asyncio.get_running_loop()
    engine = Engine(store=store)
    broker = get_broker()
    with _Interrupts(loop) as interrupts, _live_stdout(loop, interrupts.stdout_closed) as output:
        printer = EventPrinter(verbose, output.line)
        broker.register(printer)
        try:
            workflow = await _start(engine, template, data, topic)
            if interrupts.cancelling:
                workflow.cancel()
            interrupts.workflow = workflow
            timer = None
            if timeout is not None:
                timer = loop.call_later(timeout, _time_out, workflow, timeout)
            await asyncio.wait({workflow, interrupts.give_up}, return_when=asyncio.FIRST_COMPLETED)
            if timer is not None:
                timer.cancel()
            if workflow.done():
                # The last events were scheduled with the end of the workflow.
                await asyncio.wait({loop.create_task(printer.ended.wait())}, timeout=_LAST_EVENTS)
            return Outcome(workflow.report(), output.broken)
        finally:
            broker.unregister(printer)
            engine.stop(force=True)
            if not interrupts.give_up.done():
                # Lets the journal write its last records (Ctrl-C twice: do not wait).
                await asyncio.wait(
                    {loop.create_task(_stopped(engine)), interrupts.give_up}, return_when=asyncio.FIRST_COMPLETED
                )


async def _stopped(engine: Engine) -> None:
    await engine


def _time_out(workflow: Workflow, seconds: float) -> None:
    print(f"timeout: cancelling the workflow after {seconds:g} s", file=sys.stderr, flush=True)
    workflow.timeout()


def _check_writable(path: str) -> None:
    """Check a report can be written at `path` before running anything.

    Raises:
        InputError: its folder does not exist, or it cannot be written.
    """
    target = Path(path)
    folder = target.parent
    if target.is_dir():
        raise InputError(f"{path}: cannot write the report: it is a directory")
    if not folder.is_dir():
        raise InputError(f"{path}: cannot write the report: no such directory {str(folder)!r}")
    if not os.access(target if target.exists() else folder, os.W_OK):
        raise InputError(f"{path}: cannot write the report: permission denied")


def _open_store(path: str) -> Store:
    """Open (or create) the SQLite journal of ``--store``.

    Raises:
        InputError: the database cannot be opened or created.
    """
    from tukio.store.sqlite import SQLiteStore

    try:
        return SQLiteStore(path)
    except (OSError, sqlite3.Error) as exc:
        raise InputError(f"{path}: cannot open the store: {exc}") from None


def _write_report(report: dict[str, Any], path: str) -> None:
    try:
        Path(path).write_text(dumps_report(report) + "\n", encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{path}: cannot write the report: {exc.strerror or exc}") from None


def run(args: Any) -> int:
    """Run (or dry-run) the workflow and return the exit code."""
    data = parse_data(args.data)
    import_module(args.module)
    template = load_template(args.workflow)
    check_runnable(template, args.workflow)
    if args.dry_run:
        return dry_run(template, args.workflow, data, args.topic)
    if args.report is not None:
        _check_writable(args.report)
    store = _open_store(args.store) if args.store is not None else None
    try:
        with _tukio_logging(args.verbose):
            outcome = asyncio.run(
                execute(
                    template,
                    data,
                    topic=args.topic,
                    timeout=args.timeout,
                    verbose=args.verbose >= 1,
                    store=store,
                )
            )
    finally:
        if store is not None:
            store.close()
    report = outcome.report
    # Written first: the summary below may meet a closed standard output.
    if args.report is not None:
        _write_report(report, args.report)
    if outcome.reader_gone:
        return EXIT_BROKEN_PIPE
    print()
    for line in summary(report):
        print(line)
    run_info = report["exec"]
    elapsed = run_duration(run_info)
    took = f" in {format_duration(elapsed)}" if elapsed is not None else ""
    print(f"workflow {template.uid} {run_info['state']}{took}")
    if args.report is not None:
        print(f"report written to {args.report}")
    if store is not None:
        print(f"journaled in {args.store} as execution {run_info['id']}")
    why = failure(report)
    if why is not None:
        print(f"tukio: exit status {EXIT_FAILED}: {why}", file=sys.stderr)
    return exit_code(report)
