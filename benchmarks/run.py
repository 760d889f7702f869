"""Run every tukio benchmark against hand-written plain asyncio.

Usage: python benchmarks/run.py [--quick] [--repeat N] [--json OUT]

Each case runs the same work through tukio and in plain asyncio, alternately
(tukio, asyncio, tukio, asyncio, ...), each run on a fresh event loop; the
table shows the medians and their ratio (how many times slower, or bigger,
tukio is). `--quick` uses tiny sizes: a smoke test, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import scenarios  # next to this file
from scenarios import POLICIES, Case


@dataclass(frozen=True)
class Sizes:
    chain: int
    fanout: int
    triggers: int
    running: tuple[int, ...]
    checks: int
    handlers: tuple[int, ...]
    dispatches: int
    events: int


FULL = Sizes(1_000, 2_000, 10_000, (1_000, 10_000, 100_000), 1_000, (10, 1_000, 100_000), 20_000, 200_000)
QUICK = Sizes(20, 40, 100, (20, 60), 10, (10, 100), 100, 500)


def build_cases(sizes: Sizes) -> list[Case]:
    """Every benchmark case, in the order they run."""
    cases = [
        scenarios.chain_case(sizes.chain),
        scenarios.chain_lazy_case(sizes.chain),
        scenarios.fanout_case(sizes.fanout, join=False),
        scenarios.fanout_case(sizes.fanout, join=True),
        scenarios.trigger_case(sizes.triggers),
    ]
    if sys.version_info >= (3, 12):
        cases.append(scenarios.trigger_case(sizes.triggers, eager=True))
    for n in sizes.running:
        cases.append(scenarios.scaling_same_case(n, sizes.checks))
        cases.append(scenarios.scaling_distinct_case(n))
    cases.extend(scenarios.memory_case(n) for n in sizes.running if n <= 10_000)
    cases.extend(scenarios.broker_case(n, sizes.dispatches) for n in sizes.handlers)
    cases.append(scenarios.publish_case(sizes.events, listener=False))
    cases.append(scenarios.publish_case(sizes.events // 10, listener=True))
    return cases


def run_case(case: Case, repeat: int) -> list[dict[str, Any]]:
    """Run `case` (interleaved) and return one result row per metric."""
    runs = case.repeat or repeat
    if case.warmup:
        case.tukio()
        case.plain()
    samples: dict[str, tuple[list[float], list[float]]] = {key: ([], []) for key in case.metrics}
    for _ in range(runs):
        tukio, plain = case.tukio(), case.plain()
        for key, (t_list, p_list) in samples.items():
            t_list.append(tukio[key])
            if key in plain:
                p_list.append(plain[key])
    rows = []
    for key, metric in case.metrics.items():
        t_samples, p_samples = samples[key]
        t_med = statistics.median(t_samples)
        p_med = statistics.median(p_samples) if p_samples and metric.plain else None
        ratio = None
        if p_med:
            ratio = p_med / t_med if metric.higher_is_better else t_med / p_med
        rows.append(
            {
                "scenario": case.scenario,
                "case": case.case,
                "params": case.params,
                "metric": key,
                "label": metric.label,
                "unit": metric.unit,
                "higher_is_better": metric.higher_is_better,
                "tukio": t_med,
                "asyncio": p_med,
                "ratio": ratio,
                "tukio_samples": t_samples,
                "asyncio_samples": p_samples if metric.plain else [],
            }
        )
    return rows


# -- targets ---------------------------------------------------------------------------------
def find(rows: list[dict[str, Any]], scenario: str, metric: str, **params: Any) -> list[dict[str, Any]]:
    return [
        r
        for r in rows
        if r["scenario"] == scenario
        and r["metric"] == metric
        and all(r["params"].get(k) == v for k, v in params.items())
    ]


def check_targets(rows: list[dict[str, Any]], sizes: Sizes) -> list[dict[str, Any]]:
    """Compare the results with the targets of issue 5."""
    targets: list[dict[str, Any]] = []

    def target(name: str, value: float | None, limit: float, unit: str, asyncio: float | None = None) -> None:
        met = value is not None and value <= limit
        targets.append({"target": name, "value": value, "limit": limit, "unit": unit, "met": met, "asyncio": asyncio})

    def ratio(scenario: str, metric: str, **params: Any) -> float | None:
        found = find(rows, scenario, metric, **params)
        return found[0]["ratio"] if found else None

    target("chain: ratio to asyncio", ratio("chain", "us_per_task"), 3.0, "x")
    target("fan-out: ratio to asyncio", ratio("fanout", "us_per_task"), 2.5, "x")
    target("fan-out + join: ratio to asyncio", ratio("fanout-join", "us_per_task"), 2.5, "x")
    target("trigger throughput: ratio to asyncio", ratio("trigger", "wf_per_s"), 2.0, "x")

    small, large = min(sizes.running), max(sizes.running)

    def growth(scenario: str, metric: str, label: str, **params: Any) -> None:
        lo = find(rows, scenario, metric, running=small, **params)
        hi = find(rows, scenario, metric, running=large, **params)
        value = hi[0]["tukio"] / lo[0]["tukio"] if lo and hi else None
        plain = hi[0]["asyncio"] / lo[0]["asyncio"] if lo and hi and lo[0]["asyncio"] and hi[0]["asyncio"] else None
        target(f"{label}: growth {small} -> {large} running", value, 1.2, "x", plain)

    for metric, what in (("trigger_us", "trigger"), ("fifo_us", "completion FIFO"), ("lifo_us", "completion LIFO")):
        growth("scaling-same", metric, f"start-new, one template: {what}")
    for policy in ("skip", "skip-until-unlock"):
        growth("scaling-same", f"check_{policy}_us", f"{policy}, one template: rejected trigger")
    growth("scaling-same", "abort_us", "abort-running, one template: abort per running workflow")
    for policy in POLICIES:
        if policy == "start-new":
            continue
        growth("scaling-distinct", f"trigger_{policy}_us", f"{policy}, distinct templates: trigger")
    for metric, what in (("fifo_us", "completion FIFO"), ("lifo_us", "completion LIFO")):
        growth("scaling-distinct", metric, f"distinct templates: {what}")

    memory = [r["tukio"] for r in rows if r["scenario"] == "memory" and r["metric"] == "kb_per_wf"]
    target("memory per live 2-task workflow", max(memory) if memory else None, 5.0, "KB")

    for metric, what in (("register_us", "registration"), ("dispatch_none_us", "dispatch (no subscriber)")):
        values = [r["tukio"] for r in rows if r["scenario"] == "broker" and r["metric"] == metric]
        plains = [r["asyncio"] for r in rows if r["scenario"] == "broker" and r["metric"] == metric]
        value = max(values) / min(values) if values else None
        plain = max(plains) / min(plains) if plains else None
        target(f"broker {what}: growth {min(sizes.handlers)} -> {max(sizes.handlers)} handlers", value, 1.2, "x", plain)

    nobody = find(rows, "exec-event", "ns_per_event", listener=False)
    target("execution event nobody listens to", nobody[0]["tukio"] / 1000 if nobody else None, 1.0, "us")
    return targets


# -- output ----------------------------------------------------------------------------------
def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table(rows: Iterable[dict[str, Any]]) -> str:
    """A Markdown table of the results."""
    lines = ["| scenario | case | metric | unit | tukio | asyncio | ratio |", "|---|---|---|---|---:|---:|---:|"]
    for r in rows:
        ratio = f"{r['ratio']:.2f}x" if r["ratio"] is not None else "-"
        lines.append(
            f"| {r['scenario']} | {r['case']} | {r['label']} | {r['unit']} | {fmt(r['tukio'])} "
            f"| {fmt(r['asyncio'])} | {ratio} |"
        )
    return "\n".join(lines)


def target_table(targets: Iterable[dict[str, Any]]) -> str:
    lines = ["| target | tukio | limit | met | plain asyncio |", "|---|---:|---:|:---:|---:|"]
    for t in targets:
        value = f"{t['value']:.2f} {t['unit']}" if t["value"] is not None else "-"
        plain = f"{t['asyncio']:.2f} {t['unit']}" if t.get("asyncio") is not None else "-"
        met = "yes" if t["met"] else "NO"
        lines.append(f"| {t['target']} | {value} | {t['limit']} {t['unit']} | {met} | {plain} |")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test in a few seconds")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each side per case (default 5)")
    parser.add_argument("--json", default="benchmarks/results.json", help="where to write the results")
    parser.add_argument("--only", default=None, help="run only the scenarios whose name contains this")
    parser.add_argument("--gc", action="store_true", help="keep the cyclic GC on in the scaling scenarios")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")

    sizes = QUICK if args.quick else FULL
    scenarios.PAUSE_GC = not args.gc
    cases = [c for c in build_cases(sizes) if args.only is None or args.only in c.scenario]
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for case in cases:
        t0 = time.perf_counter()
        rows.extend(run_case(case, args.repeat))
        print(f"  {case.scenario}: {case.case} ({time.perf_counter() - t0:.1f}s)", file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - started
    targets = check_targets(rows, sizes) if args.only is None else []

    print(table(rows))
    if targets:
        print()
        print(target_table(targets))
    print(f"\n{len(rows)} measurements in {elapsed:.0f}s; medians of {args.repeat} interleaved runs.")

    results = {
        "machine": machine(),
        "config": {
            "quick": args.quick,
            "repeat": args.repeat,
            "gc_paused_at_scale": not args.gc,
            "sizes": sizes.__dict__,
            "seconds": elapsed,
        },
        "scenarios": sorted({r["scenario"] for r in rows}),
        "results": rows,
        "targets": targets,
    }
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=list) + "\n", encoding="utf-8")
    print(f"results written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
