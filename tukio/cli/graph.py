"""``tukio graph WORKFLOW.json``: draw a workflow as Graphviz DOT or Mermaid."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tukio.cli._common import (
    EXIT_BAD_INPUT,
    EXIT_OK,
    InputError,
    add_command,
    load_json_file,
    load_template,
)
from tukio.graph import node_states, to_dot, to_mermaid
from tukio.workflow.template import WorkflowTemplate

__all__ = ["add_parser", "check_report_matches", "run"]

_RENDERERS = {"dot": to_dot, "mermaid": to_mermaid}


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``graph`` command."""
    parser = add_command(
        subparsers,
        "graph",
        "draw a workflow as Graphviz DOT or Mermaid",
        (
            "Print the DAG of WORKFLOW as Graphviz DOT (render it with 'dot -Tpng') or as a Mermaid "
            "flowchart. With --report (written by 'tukio run --report'), each task shows its state "
            "and duration, coloured: finished, exception, timeout, skipped, cancelled, pending, not started."
        ),
        {
            EXIT_OK: "success",
            EXIT_BAD_INPUT: "bad input: unreadable or invalid workflow, a report of another workflow, unwritable OUT",
        },
    )
    parser.add_argument("workflow", metavar="WORKFLOW", help="the workflow template JSON file")
    parser.add_argument("-r", "--report", metavar="REPORT", help="a JSON report of a run of this workflow")
    parser.add_argument("-f", "--format", choices=sorted(_RENDERERS), default="dot", help="output format (dot)")
    parser.add_argument("-o", "--output", metavar="OUT", help="write to OUT instead of the standard output")
    parser.set_defaults(command=run)


def check_report_matches(template: WorkflowTemplate, report: Mapping[str, Any], path: str) -> None:
    """Check `report` is the report of a run of `template`: same workflow id, same task ids.

    Raises:
        InputError: it is not a run report (a template has no 'exec'), or it
            is the report of another workflow (naming the ids that differ).
    """
    if not isinstance(report.get("exec"), Mapping):
        raise InputError(f"{path}: not the report of a run: it has no 'exec' entry (is it a workflow template?)")
    if report.get("id") != template.uid:
        raise InputError(f"{path}: a report of workflow {report.get('id')!r}, not of {template.uid!r}")
    reported = {entry.get("id") for entry in report["tasks"] if isinstance(entry, Mapping)}
    expected = {task.uid for task in template.tasks}
    if reported != expected:
        details = []
        if expected - reported:
            details.append(f"missing from the report: {', '.join(sorted(expected - reported))}")
        if reported - expected:
            details.append(f"not in the workflow: {', '.join(sorted(map(str, reported - expected)))}")
        raise InputError(f"{path}: its tasks are not those of workflow {template.uid!r}", details)


def run(args: Any) -> int:
    """Render the workflow (and report) in the chosen format."""
    template = load_template(args.workflow)
    report = None
    if args.report is not None:
        report = load_json_file(args.report, "report")
        try:
            node_states(report)
        except ValueError as exc:
            raise InputError(f"{args.report}: {exc}") from None
        check_report_matches(template, report, args.report)
    text = _RENDERERS[args.format](template, report)
    if args.output is None:
        sys.stdout.write(text)
        return EXIT_OK
    try:
        Path(args.output).write_text(text, encoding="utf-8")
    except OSError as exc:
        print(f"tukio: error: {args.output}: cannot write: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return EXIT_OK
