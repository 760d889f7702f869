"""``tukio run MODULE WORKFLOW.json``: run a workflow once and report on it."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from tukio.broker import get_broker
from tukio.cli._common import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
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
from tukio.engine import Engine
from tukio.event import Event
from tukio.graph import format_duration, node_states, run_duration
from tukio.report_json import describe_exception, dumps_report, to_jsonable
from tukio.workflow.template import WorkflowTemplate
from tukio.workflow.workflow import Workflow

__all__ = ["EventPrinter", "add_parser", "exit_code", "run", "summary"]

_OK_STATES = frozenset({"finished", "skipped"})
_SHOWN = 200  # characters of data shown per line with -v


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
            "still written); a second Ctrl-C stops waiting for tasks that ignore cancellation."
        ),
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


class EventPrinter:
    """A global broker handler printing each execution event as one line.

    Task lines start with ``[task-id]``; workflow lines with ``workflow``.
    `ended` is set once the workflow's last event ('workflow-end' or
    'workflow-error') was printed.
    """

    def __init__(self, verbose: bool) -> None:
        self.verbose = verbose
        self.ended = asyncio.Event()

    def __call__(self, event: Event) -> None:
        source, data = event.source, event.data
        kind = data.get("type")
        if source is None or source.workflow_exec_id is None or not isinstance(kind, str):
            return  # data sent to the broker, not an execution event
        content = data.get("content")
        if source.task_template_id is not None:
            line = f"[{source.task_template_id}] {self._task_line(kind, content)}"
        else:
            line = f"workflow {source.workflow_template_id}: {self._workflow_line(kind, content)}"
        print(line, flush=True)
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
                str(run.get("error") or ""),
            ]
        )
    return table(["TASK", "NAME", "STATE", "DURATION", "ERROR"], rows)


def exit_code(report: Mapping[str, Any]) -> int:
    """1 when the workflow or a task that started did not end well, else 0."""
    run = report.get("exec") or {}
    if run.get("state") != "finished":
        return EXIT_FAILED
    for entry in report.get("tasks", []):
        task_run = entry.get("exec")
        if task_run is not None and task_run.get("state") not in _OK_STATES:
            return EXIT_FAILED
    return EXIT_OK


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
    """Ctrl-C handling: the first cancels the workflow, the second stops waiting."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.workflow: Workflow | None = None
        self.count = 0
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

    def interrupt(self) -> None:
        self.count += 1
        if self.count == 1:
            print("interrupted: cancelling the workflow (Ctrl-C again to stop waiting)", file=sys.stderr, flush=True)
            if self.workflow is not None:
                self.workflow.cancel()
        elif not self.give_up.done():
            self.give_up.set_result(None)


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
    template: WorkflowTemplate, data: dict[str, Any], *, topic: str | None, timeout: float | None, verbose: bool
) -> dict[str, Any]:
    """Run `template` once on a fresh engine; return the workflow's report."""
    loop = asyncio.get_running_loop()
    engine = Engine()
    broker = get_broker()
    printer = EventPrinter(verbose)
    broker.register(printer)
    try:
        with _Interrupts(loop) as interrupts:
            workflow = await _start(engine, template, data, topic)
            if interrupts.count:
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
                await asyncio.wait_for(printer.ended.wait(), 5)
        return workflow.report()
    finally:
        broker.unregister(printer)
        engine.stop(force=True)


def _time_out(workflow: Workflow, seconds: float) -> None:
    print(f"timeout: cancelling the workflow after {seconds:g} s", file=sys.stderr, flush=True)
    workflow.timeout()


def run(args: Any) -> int:
    """Run (or dry-run) the workflow and return the exit code."""
    data = parse_data(args.data)
    import_module(args.module)
    template = load_template(args.workflow)
    check_runnable(template, args.workflow)
    if args.dry_run:
        return dry_run(template, args.workflow, data, args.topic)
    with _tukio_logging(args.verbose):
        report = asyncio.run(execute(template, data, topic=args.topic, timeout=args.timeout, verbose=args.verbose >= 1))
    print()
    for line in summary(report):
        print(line)
    run_info = report["exec"]
    elapsed = run_duration(run_info)
    took = f" in {format_duration(elapsed)}" if elapsed is not None else ""
    print(f"workflow {template.uid} {run_info['state']}{took}")
    if args.report is not None:
        try:
            Path(args.report).write_text(dumps_report(report) + "\n", encoding="utf-8")
        except OSError as exc:
            print(f"tukio: error: {args.report}: cannot write the report: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        print(f"report written to {args.report}")
    return exit_code(report)
