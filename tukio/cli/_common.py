"""What the commands share: exit codes, the input error, loading modules and files."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from tukio._report import describe_error
from tukio._validation import parse_json
from tukio.errors import TemplateError
from tukio.task.registry import TaskRegistry
from tukio.workflow.template import WorkflowTemplate

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_BROKEN_PIPE",
    "EXIT_CODES_HELP",
    "EXIT_FAILED",
    "EXIT_MEANINGS",
    "EXIT_OK",
    "InputError",
    "add_command",
    "check_runnable",
    "exit_codes_help",
    "first_doc_line",
    "import_module",
    "load_json_file",
    "load_template",
    "parse_data",
    "table",
    "tasks_of_module",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2

EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as shells report it (see tukio.cli._output)

#: What each exit code means, for the help texts.
EXIT_MEANINGS = {
    EXIT_OK: "success",
    EXIT_FAILED: "a workflow ended with a failed, timed-out or cancelled task",
    EXIT_BAD_INPUT: "bad input: unreadable file, invalid template, unknown module or task, bad --data",
    EXIT_BROKEN_PIPE: "the standard output was closed by its reader (| head): ended quietly",
}


def exit_codes_help(meanings: Mapping[int, str]) -> str:
    """The ``exit codes:`` section of a help text, one code per line."""
    return "\n".join(["exit codes:", *(f"  {code:>3}  {text}" for code, text in meanings.items())])


EXIT_CODES_HELP = exit_codes_help(EXIT_MEANINGS)


def add_command(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    summary: str,
    description: str,
    exit_codes: Mapping[int, str],
) -> argparse.ArgumentParser:
    """Add a command's parser: `summary` for ``tukio --help``, `description` wrapped.

    Args:
        subparsers: where to add it.
        name: the command name.
        summary: one line for ``tukio --help``.
        description: the text of ``tukio NAME --help`` (wrapped).
        exit_codes: the exit codes the command can return and what each
            means for it (`EXIT_BROKEN_PIPE` is added: every command prints).

    Returns:
        The command's parser.
    """
    return subparsers.add_parser(
        name,
        help=summary,
        description=textwrap.fill(description, 78),
        epilog=exit_codes_help({**exit_codes, EXIT_BROKEN_PIPE: EXIT_MEANINGS[EXIT_BROKEN_PIPE]}),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


class InputError(Exception):
    """Bad input from the command line; `main` prints it and exits with 2.

    Args:
        message: the first line to print.
        details: more lines (one problem each), printed indented.
    """

    def __init__(self, message: str, details: list[str] | None = None) -> None:
        super().__init__(message)
        self.details = details or []


def import_module(spec: str) -> ModuleType:
    """Import a module given as a dotted name or as the path of a ``.py`` file.

    A file's folder is put first on ``sys.path`` and the file imported under
    its stem, so that it can import its neighbours. A dotted name is looked
    for as ``python -m`` would: in the current directory first.

    Raises:
        InputError: the module cannot be found, raised while importing, or
            called ``sys.exit()``.
    """
    path = Path(spec)
    is_file = spec.endswith(".py") or os.sep in spec or (os.altsep is not None and os.altsep in spec)
    if is_file:
        if not path.is_file():
            raise InputError(f"module file not found: {spec}")
        folder = str(path.resolve().parent)
        if folder not in sys.path:
            sys.path.insert(0, folder)
        name = path.stem
    else:
        name = spec
        _look_in_current_directory()
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
            raise InputError(f"unknown module: {spec}", _where_looked(exc.name)) from None
        raise InputError(f"cannot import module {spec}: {describe_error(exc)}") from None
    except Exception as exc:
        raise InputError(f"cannot import module {spec}: {describe_error(exc)}") from None
    except SystemExit as exc:  # the module called sys.exit(): not our exit code to return
        raise InputError(f"importing module {spec} exited with code {exc.code}") from None
    if is_file:
        loaded = getattr(module, "__file__", None)
        if loaded is None or Path(loaded).resolve() != path.resolve():
            raise InputError(f"cannot import {spec}: the name {name!r} is already taken by {loaded or module!r}")
    return module


def _look_in_current_directory() -> None:
    """Put the current directory first on ``sys.path``, as ``python -m`` does.

    The ``tukio`` console script starts with its own folder there instead, so
    without this ``tukio show mytasks`` would not find ``./mytasks.py``.
    """
    cwd = os.getcwd()
    if not any(entry in ("", ".") or os.path.abspath(entry) == cwd for entry in sys.path):
        sys.path.insert(0, cwd)


def _where_looked(missing: str) -> list[str]:
    """The lines saying where the import system looked for module `missing`."""
    parent, _, last = missing.rpartition(".")
    folders: list[str] = list(sys.path)
    if parent:
        folders = list(getattr(sys.modules.get(parent), "__path__", None) or [])
    cwd = os.getcwd()
    lines = [f"looked for {last}.py and {last}/__init__.py in:"]
    for folder in folders:
        path = os.path.abspath(folder or ".")
        lines.append(f"  {path} (the current directory)" if path == cwd else f"  {path}")
    lines.append("give the path of the .py file, or run tukio from the folder that holds it")
    return lines


def tasks_of_module(spec: str) -> tuple[ModuleType, list[str]]:
    """Import `spec` and return it with the task names it registers.

    The names registered while importing come first, in registration order;
    when the module was already imported, the registered tasks whose code
    lives in it are found instead.

    Raises:
        InputError: see `import_module`.
    """
    before = set(TaskRegistry.all())
    module = import_module(spec)
    entries = TaskRegistry.all()
    names = [name for name in entries if name not in before]
    for name, (klass, coro_fn) in entries.items():
        owner = klass if klass is not None else coro_fn
        if name not in names and getattr(owner, "__module__", None) == module.__name__:
            names.append(name)
    return module, names


def load_json_file(path: str, what: str = "file") -> Any:
    """Read and parse a JSON file.

    Raises:
        InputError: the file cannot be read or is not JSON (naming line and
            column), nests too deeply, or holds an integer too long to convert.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise InputError(f"{path}: cannot read {what}: {exc.strerror or exc}") from None
    try:
        return parse_json(raw)
    except ValueError as exc:
        raise InputError(f"{path}: json: {exc}") from None


def load_template(path: str) -> WorkflowTemplate:
    """Read a workflow template file (structure checked, names not).

    Raises:
        InputError: unreadable file, or the template's problems, one per detail line.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise InputError(f"{path}: cannot read workflow: {exc.strerror or exc}") from None
    try:
        return WorkflowTemplate.from_json(raw)
    except TemplateError as exc:
        raise InputError(f"{path}: invalid workflow template", [f"{path}: {p}" for p in exc.problems]) from None


def check_runnable(template: WorkflowTemplate, path: str) -> None:
    """Check the template has one root and only registered task names.

    Raises:
        InputError: listing every problem.
    """
    try:
        template.validate()
    except TemplateError as exc:
        raise InputError(f"{path}: workflow cannot run", [f"{path}: {p}" for p in exc.problems]) from None


def parse_data(text: str | None) -> dict[str, Any]:
    """Parse the ``--data`` option: a JSON object, or ``@file.json`` holding one.

    Raises:
        InputError: not JSON, unreadable file, or not an object.
    """
    if text is None:
        return {}
    if text.startswith("@"):
        value = load_json_file(text[1:], "data")
        where = text[1:]
    else:
        try:
            value = parse_json(text)
        except ValueError as exc:
            raise InputError(f"--data: not JSON: {exc}") from None
        where = "--data"
    if not isinstance(value, dict):
        raise InputError(f"{where}: the data must be a JSON object, got {type(value).__name__}")
    return value


def first_doc_line(obj: Any) -> str:
    """The first non-empty line of `obj`'s docstring ('' without one)."""
    doc = getattr(obj, "__doc__", None) or ""
    for line in doc.strip().splitlines():
        if line.strip():
            return line.strip()
    return ""


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """Lay out rows in left-aligned columns under `header` (trailing spaces stripped)."""
    all_rows = [list(header), *(list(r) for r in rows)]
    widths = [max(len(r[i]) for r in all_rows) for i in range(len(header))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in all_rows]
