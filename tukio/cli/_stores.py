"""Opening the store a command names: ``--store`` (an SQLite file or a PostgreSQL URL) and ``--schema``."""

from __future__ import annotations

import argparse
import os
import sqlite3

from tukio.cli._common import InputError
from tukio.store.base import Store
from tukio.store.sqlite import SQLiteStore

__all__ = ["add_store_options", "open_store"]


def add_store_options(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    """Add ``--store`` and ``--schema`` to a command's parser."""
    parser.add_argument(
        "--store", required=required, metavar="PATH", help="the SQLite database of the journal, or a postgresql:// URL"
    )
    parser.add_argument("--schema", default="tukio", help="the PostgreSQL schema of the journal (default: tukio)")


def open_store(store: str, schema: str) -> Store:
    """Open the store named by ``--store``: an SQLite file or a PostgreSQL URL.

    Raises:
        InputError: the file does not exist, or the store cannot be opened.
    """
    if store.startswith(("postgresql://", "postgres://")):
        from tukio.store.postgres import PostgresStore

        try:
            return PostgresStore(store, schema=schema, retry_for=0, timeout=10)
        except ImportError as exc:
            raise InputError(str(exc)) from None
        except Exception as exc:
            raise InputError(f"cannot open the PostgreSQL store: {type(exc).__name__}: {exc}") from None
    if not os.path.isfile(store):
        raise InputError(f"{store}: no such store")
    try:
        return SQLiteStore(store)
    except sqlite3.Error as exc:
        raise InputError(f"{store}: cannot open the store: {exc}") from None
