"""``tukio inspect --store PATH --prune [--before ISO] [--vacuum]``."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tukio.cli import main
from tukio.store import SQLiteStore
from tukio.store.base import ExecutionRecord, TaskRecord

OLD = datetime(2020, 1, 1, tzinfo=timezone.utc)
NEW = datetime(2026, 6, 1, tzinfo=timezone.utc)


def _execution(store: SQLiteStore, exec_id: str, ended: datetime | None, template_id: str = "t") -> None:
    state = "pending" if ended is None else "finished"
    end = ended.isoformat() if ended is not None else None
    store.write(
        [
            ExecutionRecord(exec_id, template_id, state, OLD.isoformat(), end, template="{}", event="{}"),
            TaskRecord(exec_id, "a", "x", "finished", None, end, '{"outputs":"' + "y" * 2000 + '"}'),
        ]
    )


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "journal.db"
    with SQLiteStore(path) as store:
        for i in range(100):
            _execution(store, f"old-{i:03}", OLD)
        _execution(store, "new", NEW)
        _execution(store, "other", OLD, template_id="other")
        _execution(store, "running", None)
    return path


def _ids(path: Path) -> list[str]:
    with SQLiteStore(path) as store:
        return sorted(i.exec_id for i in store.executions())


def test_prune_before_a_time(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    size = db.stat().st_size
    assert main(["inspect", "--store", str(db), "--prune", "--yes", "--before", "2021-01-01T00:00:00+00:00"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{db}: pruned 101 finished execution(s) that ended before 2021-01-01T00:00:00+00:00"
    assert out[1].startswith(f"{db}: database ")
    assert _ids(db) == ["new", "running"]
    assert db.stat().st_size < size / 4


def test_prune_everything_finished_of_one_template_then_vacuum(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", "--store", str(db), "--prune", "--yes", "--template", "other", "--vacuum"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{db}: pruned 1 finished execution(s) of template other"
    assert out[1] == f"{db}: vacuumed"
    assert "other" not in _ids(db)
    assert len(_ids(db)) == 102


def test_a_naive_time_is_utc(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", "--store", str(db), "--prune", "--yes", "--before", "2026-06-01T00:00:01"]) == 0
    assert "pruned 102 " in capsys.readouterr().out
    assert _ids(db) == ["running"]


def test_vacuum_alone(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", "--store", str(db), "--vacuum"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"{db}: vacuumed"
    assert len(_ids(db)) == 103


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--prune", "--yes", "--before", "last week"], "--before: not an ISO 8601 time: 'last week'"),
        (["--before", "2021-01-01"], "--before needs --prune"),
        (["--prune", "--yes", "new"], "--prune cannot be combined with EXEC_ID or --state"),
        (["--prune", "--yes", "--state", "finished"], "--prune cannot be combined with EXEC_ID or --state"),
        (["--vacuum", "new"], "--vacuum cannot be combined with EXEC_ID or --state"),
    ],
)
def test_bad_prune_arguments_exit_2(
    db: Path, extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["inspect", "--store", str(db), *extra]) == 2
    assert capsys.readouterr().err == f"tukio: error: {message}\n"
    assert len(_ids(db)) == 103


def test_prune_of_a_missing_store_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", "--store", str(tmp_path / "nope.db"), "--prune"]) == 2
    assert "no such store" in capsys.readouterr().err
    assert not (tmp_path / "nope.db").exists()


def test_prune_before_a_time_in_another_zone(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = (NEW + timedelta(hours=1)).astimezone(timezone(timedelta(hours=5))).isoformat()
    assert main(["inspect", "--store", str(db), "--prune", "--yes", "--before", before]) == 0
    assert _ids(db) == ["running"]


def test_a_store_that_cannot_be_written_exits_2(
    db: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def locked(self: SQLiteStore) -> None:
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(SQLiteStore, "vacuum", locked)
    assert main(["inspect", "--store", str(db), "--vacuum"]) == 2
    assert capsys.readouterr().err == f"tukio: error: {db}: cannot prune the store: database is locked\n"
