"""``tukio validate FILE...``: report every problem of workflow template files."""

from __future__ import annotations

import argparse
from typing import Any

from tukio._validation import name_problems
from tukio.cli._common import (
    EXIT_BAD_INPUT,
    EXIT_OK,
    InputError,
    add_command,
    import_module,
    load_json_file,
    load_template,
)
from tukio.errors import TemplateError
from tukio.task.registry import TaskRegistry
from tukio.workflow.template import WorkflowTemplate

__all__ = ["add_parser", "problems_of", "run"]


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``validate`` command."""
    parser = add_command(
        subparsers,
        "validate",
        "check workflow template files",
        (
            "Check workflow template files and print every problem, one per line, as "
            "'FILE: WHERE: PROBLEM'. The structure, the graph and the single root are always "
            "checked; with --modules, the task names must also be registered by those modules."
        ),
        {
            EXIT_OK: "every file is valid",
            EXIT_BAD_INPUT: "a file has a problem, or a module cannot be imported",
        },
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="workflow template JSON files")
    parser.add_argument(
        "-m",
        "--modules",
        action="append",
        metavar="MODULE",
        default=[],
        help="a module registering tasks (dotted name or .py path), imported first; repeat for several",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="print the problems only, not the valid files")
    parser.set_defaults(command=run)


def problems_of(path: str, check_names: bool) -> tuple[WorkflowTemplate | None, list[str]]:
    """Load the template at `path`; return it (None if unusable) and its problems.

    Every problem reads ``FILE: WHERE: MESSAGE``.
    """
    try:
        template = load_template(path)
    except InputError as exc:
        found = exc.details or [str(exc)]
        if check_names and exc.details:  # the names too, not only once the rest is fixed
            found += [f"{path}: {p}" for p in name_problems(_raw_names(path), TaskRegistry)]
        return None, found
    try:
        if check_names:
            template.validate()
        else:
            template.root()
    except TemplateError as exc:
        return template, [f"{path}: {p}" for p in exc.problems]
    return template, []


def _raw_names(path: str) -> list[Any]:
    """The task names of a template file whose structure has problems (what can be read of them)."""
    try:
        tasks = load_json_file(path).get("tasks")
    except (InputError, AttributeError):
        return []
    return [t.get("name") if isinstance(t, dict) else None for t in tasks] if isinstance(tasks, list) else []


def run(args: Any) -> int:
    """Check every file; exit 2 when any has a problem."""
    for spec in args.modules:
        import_module(spec)
    status = EXIT_OK
    for path in args.files:
        template, found = problems_of(path, check_names=bool(args.modules))
        for problem in found:
            print(problem)
        if found:
            status = EXIT_BAD_INPUT
        elif not args.quiet and template is not None:
            count = len(template.tasks)
            print(f"{path}: ok ({count} task{'s' if count != 1 else ''})")
    return status
