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


class PrivateServer:
    """A PostgreSQL server of the test's own (initdb + pg_ctl), on a free port, run as a non-root user.

    Skips (or fails, when PostgreSQL is required) without initdb/pg_ctl.
    """

    def __init__(self) -> None:
        import pwd
        import shutil
        import socket
        import tempfile

        self.initdb, self.pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
        if self.initdb is None or self.pg_ctl is None:
            reason = "initdb/pg_ctl not found: cannot start a private PostgreSQL"
            if REQUIRED:
                pytest.fail(reason)
            pytest.skip(reason)
        self.user: str | None = None
        if os.getuid() == 0:  # PostgreSQL refuses to run as root
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                pytest.skip("running as root and no 'postgres' user to run a private server")
            self.user = "postgres"
        self.dir = tempfile.mkdtemp(prefix="tukio-pg-")
        if self.user is not None:
            shutil.chown(self.dir, self.user)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._run(self.initdb, "-D", f"{self.dir}/data", "-A", "trust", "-U", "postgres", "--no-sync")
        self._ctl("start", "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1", "-l", f"{self.dir}/log")

    def _run(self, *argv: str) -> None:
        import subprocess

        cmd = list(argv) if self.user is None else ["runuser", "-u", self.user, "--", *argv]
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)

    def _ctl(self, action: str, *options: str) -> None:
        assert self.pg_ctl is not None
        self._run(self.pg_ctl, "-D", f"{self.dir}/data", "-w", "-t", "30", *options, action)

    def restart(self, mode: str = "fast") -> None:
        """Stop the server (fast: sessions are cut; immediate: as a crash would) and start it again."""
        self._ctl("restart", "-m", mode, "-l", f"{self.dir}/log")

    def close(self) -> None:
        import shutil

        try:
            self._ctl("stop", "-m", "immediate")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
