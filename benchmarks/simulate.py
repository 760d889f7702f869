"""Thousands of seeded schedules of the ownership protocol, simulated deterministically.

    python benchmarks/simulate.py [--seeds 2000] [--first 0] [--steps 120]

Each seed drives three nodes (real `SQLiteStore` objects on one file, a
virtual lease clock) through beats, claims, triggers, task bodies, pauses
past the lease, crashes and restarts (see ``tests/sim_ownership.py``), then
checks that no committed task ran again, no task's bodies overlapped on
healthy nodes, no task's end was committed twice, and every execution
finished. Prints the seeds that broke a promise (none: 0), what the runs
did, and how long they took.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from sim_ownership import simulate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2000)
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--steps", type=int, default=120)
    args = parser.parse_args()
    totals = {"executions": 0, "bodies": 0, "faulted": 0, "twice": 0}
    broken: list[tuple[int, list[str]]] = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tukio-sim-") as folder:
        for seed in range(args.first, args.first + args.seeds):
            path = Path(folder) / f"sim-{seed}.db"
            problems, stats = simulate(path, seed, steps=args.steps)
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
            for key in totals:
                totals[key] += stats[key]
            if problems:
                broken.append((seed, problems))
    elapsed = time.perf_counter() - start
    print(f"{args.seeds} seeds from {args.first} in {elapsed:.1f} s ({args.seeds / elapsed:.0f} seeds/s)")
    print(
        f"executions {totals['executions']}, task bodies {totals['bodies']}, bodies hit by a fault "
        f"{totals['faulted']}, tasks whose body ran more than once {totals['twice']}"
    )
    print(f"seeds that broke a promise: {len(broken)}")
    for seed, problems in broken[:20]:
        print(f"  seed {seed}: {problems[:3]}")


if __name__ == "__main__":
    main()
