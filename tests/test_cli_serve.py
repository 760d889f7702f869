"""``tukio serve``: what it refuses at start-up, and a real server answering (stopped by PID)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from browser import serving

from tukio.cli import main
from tukio.store import SQLiteStore

pytest.importorskip("uvicorn", reason="tukio serve needs the web extra (requirements-dev.txt)")


@pytest.fixture
def journal(tmp_path: Path) -> Path:
    path = tmp_path / "journal.db"
    SQLiteStore(path).close()
    return path


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.4", "::", "example.com"])
def test_exposed_without_a_token_is_refused(
    host: str, journal: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TUKIO_SERVE_TOKEN", raising=False)
    assert main(["serve", "--store", str(journal), "--host", host]) == 2
    err = capsys.readouterr().err
    assert f"refusing to serve on {host} without a token" in err
    assert "--token" in err


def test_a_missing_store_and_a_bad_port(tmp_path: Path, journal: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--store", str(tmp_path / "nope.db")]) == 2
    assert "no such store" in capsys.readouterr().err
    assert main(["serve", "--store", str(journal), "--port", "70000"]) == 2
    assert "--port 70000: not a port number" in capsys.readouterr().err


def test_a_served_store_with_a_token_from_the_environment(journal: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUKIO_SERVE_TOKEN", "from-env")
    with serving(journal) as base:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{base}/api/executions", timeout=5)
        assert refused.value.code == 401
        refused.value.close()
        request = urllib.request.Request(f"{base}/api/executions", headers={"Authorization": "Bearer from-env"})
        with urllib.request.urlopen(request, timeout=5) as response:
            assert json.load(response) == {"items": [], "next": None}
        with urllib.request.urlopen(f"{base}/static/style.css", timeout=5) as response:
            assert response.headers["content-type"].startswith("text/css")


def test_serve_runs_uvicorn_on_the_address_given(
    journal: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """In process: what ``tukio serve`` hands to uvicorn (the subprocess test shows it serving)."""
    import uvicorn

    served: list[tuple[Any, str, int]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port, **_: served.append((app, host, port)))
    assert main(["serve", "--store", str(journal), "--host", "::1", "--port", "9999", "--token", "t"]) == 0
    [(app, host, port)] = served
    assert (host, port) == ("::1", 9999)
    assert any(getattr(route, "path", None) == "/api/executions" for route in app.routes)
    assert f"serving {journal} on http://[::1]:9999/" in capsys.readouterr().out
