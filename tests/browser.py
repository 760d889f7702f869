"""The console's browser tests' tools: Debian's chromium driven by Playwright, a ``tukio serve`` subprocess."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

#: The browser the tests drive (never downloaded: Debian's package, which .ci/run installs).
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Set to 1 (CI does) to make a missing browser a failure instead of a skip.
REQUIRED = os.environ.get("TUKIO_REQUIRE_BROWSER") == "1"


def missing_browser() -> str | None:
    """Why the browser tests cannot run here, or None."""
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -r requirements-dev.txt)"
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    return None


def need_browser() -> None:
    """Skip the test (fail it when CI requires the browser) when the browser cannot run."""
    reason = missing_browser()
    if reason is None:
        return
    if REQUIRED:
        pytest.fail(f"TUKIO_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(store: Path, *extra: str, timeout: float = 20.0) -> Iterator[str]:
    """Run ``tukio serve`` on `store` in a subprocess; yield its base URL; stop it by PID.

    Raises:
        AssertionError: the server did not answer within `timeout` seconds.
    """
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tukio", "serve", "--store", str(store), "--port", str(port), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            assert process.poll() is None, f"tukio serve exited: {process.stdout.read().decode()}"  # type: ignore[union-attr]
            try:
                with urllib.request.urlopen(f"{base}/", timeout=1):
                    break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, "tukio serve never answered"
                time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        if process.stdout is not None:
            process.stdout.close()


#: `serve` as a context manager: ``with serving(path) as base: ...``.
serving = contextmanager(serve)
