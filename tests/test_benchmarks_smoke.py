"""The benchmark runner works end to end at tiny sizes (no timing is checked)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SCENARIOS = {
    "chain",
    "chain-lazy",
    "fanout",
    "fanout-join",
    "trigger",
    "scaling-same",
    "scaling-distinct",
    "memory",
    "broker",
    "exec-event",
} | ({"trigger-eager"} if sys.version_info >= (3, 12) else set())


@pytest.mark.slow
def test_quick_run_writes_every_scenario(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--repeat", "1", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(out.read_text(encoding="utf-8"))
    assert set(results["scenarios"]) == SCENARIOS
    assert {row["scenario"] for row in results["results"]} == SCENARIOS
    for row in results["results"]:
        assert row["tukio"] > 0, row
        assert len(row["tukio_samples"]) == 1, row
    assert results["targets"], "the targets are evaluated"
    assert all(isinstance(t["met"], bool) for t in results["targets"])


@pytest.mark.slow
def test_durable_benchmark_runs_both_cases(tmp_path: Path) -> None:
    script = ROOT / "benchmarks" / "durable.py"
    done = subprocess.run(
        [sys.executable, str(script), "--tasks", "20", "--concurrent", "5", "--runs", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "one chain of 20 no-op tasks" in done.stdout
    assert "5 chains of 10 no-op tasks at once" in done.stdout
    assert done.stdout.count("ratio:") == 4


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["memory", "sqlite", "null"])
def test_durable_benchmark_runs_one_engine_for_callgrind(tmp_path: Path, kind: str) -> None:
    script = ROOT / "benchmarks" / "durable.py"
    done = subprocess.run(
        [sys.executable, str(script), "--only", kind, "--tasks", "5", "--runs", "2"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_soak_runs_samples_and_prunes(tmp_path: Path) -> None:
    db = tmp_path / "soak.db"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "soak.py"), "--workflows", "300", "--samples", "3", "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["workflows", "seconds", "wf/s", "RSS", "MB", "WAL", "MB", "DB", "MB", "pruned"]
    assert [line.split()[0] for line in lines[1:4]] == ["100", "200", "300"]
    assert "300 workflows (0 failed)" in done.stdout
    assert "after vacuum(): database" in done.stdout


@pytest.mark.slow
def test_events_benchmark_measures_every_case(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "events.py"), "--events", "20", "--no-postgres"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout.splitlines()[-1])
    assert set(results) == {
        "local/none",
        "local/memory not journaled",
        "local/memory events journaled",
        "local/sqlite not journaled",
        "local/sqlite events journaled",
        "across/sqlite poll 0.05s",
        "across/sqlite poll 0.01s",
    }
    assert all(row["median_ms"] > 0 for row in results.values())


@pytest.mark.slow
def test_journal_size_benchmark_measures_a_store(tmp_path: Path) -> None:
    script = ROOT / "benchmarks" / "journal_size.py"
    done = subprocess.run(
        [sys.executable, str(script), "--store", "sqlite", "--executions", "50"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert set(result) == {"bytes_per_execution", "trigger_us", "per_second"}
    assert all(value > 0 for value in result.values())


def test_telemetry_benchmark_runs_every_case(tmp_path: Path) -> None:
    pytest.importorskip("opentelemetry.sdk", reason="the benchmark needs opentelemetry-sdk (requirements-dev.txt)")
    script = ROOT / "benchmarks" / "telemetry.py"
    done = subprocess.run(
        [sys.executable, str(script), "--tasks", "3", "--concurrent", "2", "--runs", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "not instrumented" in done.stdout
    assert "instrumented (SDK, no-op exporter)" in done.stdout
    assert "instrumented, then uninstrumented" in done.stdout


@pytest.mark.slow
def test_flow_benchmark_prints_every_figure(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "flow.py"),
            *("--triggers", "200", "--runs", "1", "--queue", "200", "--flood", "50"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("ratio") == 3
    assert "most running at once: 50" in done.stdout
    assert "keys 1-9 wait p50" in done.stdout
    assert "plain FIFO queue" in done.stdout
