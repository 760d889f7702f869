"""The PostgreSQL the tests use: found, or skipped (a failure when CI requires it)."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator

import pytest

#: Where the tests look for PostgreSQL (TUKIO_TEST_POSTGRES overrides it).
DSN = os.environ.get("TUKIO_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
#: Set to 1 (CI does) to make a missing PostgreSQL a failure instead of a skip.
REQUIRED = os.environ.get("TUKIO_REQUIRE_POSTGRES") == "1"

_reason: str | None = None
_checked = False


def _probe() -> str | None:
    """Return why PostgreSQL cannot be used, or None when it can."""
    try:
        import asyncpg
    except ImportError:
        return "asyncpg is not installed (pip install tukio[postgres])"

    async def connect() -> None:
        conn = await asyncpg.connect(DSN, timeout=3)
        await conn.close()

    try:
        asyncio.run(connect())
    except Exception as exc:
        return f"no PostgreSQL at {DSN}: {type(exc).__name__}: {exc}"
    return None


def need_postgres() -> str:
    """Return the DSN of the test database; skip (or fail, when required) without one."""
    global _reason, _checked
    if not _checked:
        _reason, _checked = _probe(), True
    if _reason is not None:
        if REQUIRED:
            pytest.fail(f"TUKIO_REQUIRE_POSTGRES=1 but {_reason}")
        pytest.skip(_reason)
    return DSN


def drop_schema(schema: str) -> None:
    import asyncpg

    async def drop() -> None:
        conn = await asyncpg.connect(DSN, timeout=5)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()

    asyncio.run(drop())


def fresh_schema() -> Iterator[tuple[str, str]]:
    """Yield (dsn, schema) of a schema of its own, dropped afterwards."""
    dsn = need_postgres()
    schema = f"test_{uuid.uuid4().hex[:12]}"
    try:
        yield dsn, schema
    finally:
        drop_schema(schema)
