"""The examples run as a newcomer would run them, and print what they promise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_example(name: str) -> str:
    out = subprocess.run(
        [sys.executable, "-W", "error", str(ROOT / "examples" / name)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_readme_example_prints_the_original_lines_in_order() -> None:
    assert run_example("readme_example.py").splitlines() == [
        "In task2 (f1): {'initial': 'data'}",
        "In task2 (f2): {'initial': 'data', 'f1': 'data from task2'}",
        "In task1 (f3): {'initial': 'data', 'f1': 'data from task2', 'f2': 'data from task2'}",
        "In task1 (f4): {'initial': 'data', 'f1': 'data from task2', 'f2': 'data from task2'}",
        "In task2 (f5): {'f3': 'data from task1'}",
        "In task1 (f6): {'f4': 'data from task1'}",
    ]


def test_approval_example_waits_for_the_event() -> None:
    assert run_example("approval.py").splitlines() == [
        "order received: {'item': 'book', 'order_id': 42}",
        "waiting for approval of order 42...",
        "approved by alice",
        "shipping order 42 approved by alice",
        "final state: {'receive': 'finished', 'approve': 'finished', 'ship': 'finished'}",
    ]
