"""The fault-injection suite at length: many seeds of one fault kind (or of each), with a table of violations.

Each seed is one run of `tests/chaos_harness.py` (three engine processes on
one journal, a DAG with a join, a 'skip' template and listening tasks, fed
on a seeded schedule while faults of the kind are injected; then the
checker). Prints one line per seed, then a table (fault, store, seeds,
runs with a violation, violations by invariant) in Markdown, which
`docs/faults.md` keeps.

    python benchmarks/chaos.py --seeds 10 --fault kill --store pg
    python benchmarks/chaos.py --seeds 10 --fault all --store sqlite [--feed 5] [--first 100]

PostgreSQL is found at TUKIO_TEST_POSTGRES (default
postgresql://postgres@127.0.0.1:5432/test); the restart fault starts a
private server (initdb/pg_ctl, as user postgres when run as root).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))

from chaos_harness import FAULTS, PG_ONLY, Scenario, run  # noqa: E402

DSN = os.environ.get("TUKIO_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def invariant(violation: str) -> str:
    """The invariant a violation line breaks (its first word)."""
    return violation.split(":", 1)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=10, help="seeds per fault kind")
    parser.add_argument("--first", type=int, default=1, help="the first seed")
    parser.add_argument("--fault", default="all", choices=("all", *FAULTS))
    parser.add_argument("--store", default="pg", choices=("pg", "sqlite"))
    parser.add_argument("--feed", type=float, default=5.0, help="seconds of work and faults per seed")
    parser.add_argument("--show", type=int, default=3, help="violations printed per seed")
    args = parser.parse_args()
    kinds = FAULTS if args.fault == "all" else (args.fault,)
    kinds = tuple(k for k in kinds if args.store == "pg" or k not in PG_ONLY)
    rows = []
    for kind in kinds:
        failed, broken = 0, Counter[str]()
        for seed in range(args.first, args.first + args.seeds):
            scenario = Scenario(args.store, kind, seed, feed=args.feed)
            began = time.monotonic()
            with tempfile.TemporaryDirectory(prefix="tukio-chaos-") as workdir:
                outcome = run(scenario, Path(workdir), DSN)
            seconds = time.monotonic() - began
            failed += bool(outcome.violations)
            broken.update(invariant(v) for v in outcome.violations)
            print(
                f"{kind:8} {args.store:6} seed {seed:4}: {len(outcome.violations):4} violation(s), "
                f"{outcome.executions} executions, {outcome.runs} runs, {outcome.events} events, "
                f"{outcome.faults} faults, {seconds:.1f}s",
                flush=True,
            )
            for line in outcome.violations[: args.show]:
                print(f"    {line}", flush=True)
        kinds_broken = ", ".join(f"{name} {n}" for name, n in sorted(broken.items())) or "-"
        rows.append(f"| {kind} | {args.store} | {args.seeds} | {failed} | {kinds_broken} |")
    print()
    print("| fault | store | seeds | seeds with a violation | violations by invariant |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
