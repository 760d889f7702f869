"""What the commands reading a journal share: ``--store``, opening it, times, and confirmations."""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import os
import sqlite3
import sys
from collections.abc import Coroutine
from datetime import datetime, timezone
from typing import Any, TypeVar

from tukio.cli._common import InputError
from tukio.store.base import Store

__all__ = ["add_store_options", "confirm", "open_store", "parse_iso", "run_sync"]

_T = TypeVar("_T")


def add_store_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--store`` (required) and ``--schema``."""
    parser.add_argument(
        "--store", required=True, metavar="PATH", help="the SQLite database of the journal, or a postgresql:// URL"
    )
    parser.add_argument("--schema", default="tukio", help="the PostgreSQL schema of the journal (default: tukio)")


def open_store(args: Any) -> Store:
    """Open the existing store named by ``--store``: an SQLite file or a PostgreSQL URL.

    Raises:
        InputError: the file does not exist or cannot be opened, the server
            cannot be reached, or asyncpg is missing.
    """
    if args.store.startswith(("postgresql://", "postgres://")):
        from tukio.store.postgres import PostgresStore

        try:
            return PostgresStore(args.store, schema=args.schema, retry_for=0, timeout=10)
        except ImportError as exc:
            raise InputError(str(exc)) from None
        except Exception as exc:
            raise InputError(f"cannot open the PostgreSQL store: {type(exc).__name__}: {exc}") from None
    if not os.path.isfile(args.store):
        raise InputError(f"{args.store}: no such store")
    from tukio.store.sqlite import SQLiteStore

    try:
        return SQLiteStore(args.store)
    except sqlite3.Error as exc:
        raise InputError(f"{args.store}: cannot open the store: {exc}") from None


def parse_iso(option: str, text: str | None) -> datetime | None:
    """Read an ISO 8601 time given to `option` (UTC when it names no offset).

    Raises:
        InputError: `text` is not an ISO 8601 time.
    """
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise InputError(f"{option}: not an ISO 8601 time: {text!r}") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def confirm(question: str, yes: bool) -> bool:
    """Ask `question` on the terminal (``[y/N]``), unless `yes`.

    Returns:
        True when the answer is yes (or `yes` was given).

    Raises:
        InputError: no terminal to ask on, and `yes` was not given.
    """
    if yes:
        return True
    if not sys.stdin.isatty():
        raise InputError(f"{question} needs a confirmation: the input is not a terminal; pass --yes")
    sys.stderr.write(f"{question} [y/N] ")
    sys.stderr.flush()
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def run_sync(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run `coro` to its end and return its result, on a loop of its own.

    On a thread of its own when the caller runs a loop already (``main()``
    called from a coroutine: a notebook, a test).
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()
