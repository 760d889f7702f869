"""``tukio migrate --store S --to V EXEC_ID...``: move unfinished executions to another template version."""

from __future__ import annotations

import argparse
import os
from typing import Any

from tukio.cli._common import EXIT_BAD_INPUT, EXIT_OK, InputError, add_command, load_template
from tukio.cli._store import add_store_options, open_store
from tukio.errors import MigrationError, TemplateError, UnknownVersionError
from tukio.store.migrate import migrate
from tukio.workflow.template import WorkflowTemplate

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``migrate`` command."""
    parser = add_command(
        subparsers,
        "migrate",
        "move unfinished executions to another version of their template",
        (
            "Pin the unfinished executions EXEC_ID... of the store to another version of their template: "
            "--to names a version the store keeps (see 'tukio show --store S') or a template JSON file. "
            "Each task record moves to the task of the same id in that version, or to the one --map names "
            "(OLD=NEW, repeatable). Refused, with nothing changed, when a task that ended has no counterpart. "
            "Run it on executions no engine runs (those Engine.unrecovered lists, or with the engines "
            "stopped): the next recover() resumes them on the new version."
        ),
        {EXIT_OK: "moved", EXIT_BAD_INPUT: "bad input: unreadable store or file, unknown version, refused migration"},
    )
    add_store_options(parser)
    parser.add_argument("--to", required=True, metavar="VERSION|FILE", help="a stored version id, or a template file")
    parser.add_argument(
        "--map", action="append", default=[], metavar="OLD=NEW", help="the new id of a renamed task (repeatable)"
    )
    parser.add_argument("exec_ids", nargs="+", metavar="EXEC_ID", help="the executions to move")
    parser.set_defaults(command=run)


def _mapping(pairs: list[str]) -> dict[str, str]:
    """Parse ``--map OLD=NEW`` options.

    Raises:
        InputError: a pair is not OLD=NEW.
    """
    mapping: dict[str, str] = {}
    for pair in pairs:
        old, sep, new = pair.partition("=")
        if not sep or not old or not new:
            raise InputError(f"--map: expected OLD=NEW, got {pair!r}")
        mapping[old] = new
    return mapping


def run(args: Any) -> int:
    """Move the executions; print the version they run on.

    Raises:
        InputError: the store or file cannot be read, the version is unknown,
            or the migration is refused (each reason listed).
    """
    mapping = _mapping(args.map)
    to: WorkflowTemplate | str = load_template(args.to) if os.path.isfile(args.to) else args.to
    with open_store(args) as store:
        try:
            version = migrate(store, args.exec_ids, to, mapping)
        except MigrationError as exc:
            raise InputError("migration refused, nothing changed", exc.problems) from None
        except (UnknownVersionError, TemplateError) as exc:
            raise InputError(f"{args.store}: {exc}") from None
    print(f"{args.store}: {len(set(args.exec_ids))} execution(s) now run on version {version}")
    return EXIT_OK
