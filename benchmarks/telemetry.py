"""What OpenTelemetry costs per task: the same workflows on an engine instrumented or not.

Runs chains of no-op tasks (``--concurrent`` chains of ``--tasks`` tasks at
once) on a plain engine and on one instrumented with
`tukio.telemetry.instrument` (the OpenTelemetry SDK: a `TracerProvider`
with a `BatchSpanProcessor` whose exporter drops every span, and a
`MeterProvider` whose reader is never collected), alternating them in the
same process, and prints the median CPU time per task of each (the
process's CPU time, every thread included: on a shared machine it moves
less than the wall clock), the difference (what the listener adds per
task: a task's span, its share of the execution's, a histogram record) and
the ratio. Two more cases: the listener with OpenTelemetry's no-op
providers (the API without the SDK: the listener's own cost), and an
engine that was instrumented and then uninstrumented (nothing is left
behind on the hot path).

    python benchmarks/telemetry.py [--tasks 20] [--concurrent 100] [--runs 7]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import time
from collections.abc import Callable, Sequence

from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import NoOpTracerProvider

from tukio import Engine, TaskRegistry, WorkflowTemplate, register
from tukio.telemetry import instrument

TASK = "bench-telemetry-noop"


class DropSpans(SpanExporter):
    """An exporter that exports nothing (the SDK's own cost only)."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


async def noop(event: object) -> None:
    return None


def chain(tasks: int) -> WorkflowTemplate:
    ids = [f"t{i}" for i in range(tasks)]
    return WorkflowTemplate.from_dict(
        {
            "id": "bench-telemetry",
            "policy": "start-new",
            "tasks": [{"id": i, "name": TASK} for i in ids],
            "graph": {a: [b] for a, b in itertools.pairwise(ids)},
        }
    )


async def one_run(template: WorkflowTemplate, concurrent: int, setup: Callable[[Engine], object]) -> float:
    """CPU seconds of this process (every thread: the SDK's exporting one too) to run
    `concurrent` executions of `template` at once on a fresh engine."""
    engine = Engine()
    setup(engine)
    start = time.process_time()
    workflows = [await engine.run_once(template, {}) for _ in range(concurrent)]
    await asyncio.wait([w for w in workflows if w is not None])
    elapsed = time.process_time() - start
    await engine.stop()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=20, help="tasks per chain")
    parser.add_argument("--concurrent", type=int, default=100, help="chains running at once")
    parser.add_argument("--runs", type=int, default=7, help="runs of each case (medians are printed)")
    args = parser.parse_args()
    if not TaskRegistry.registered(TASK):
        register(TASK)(noop)
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(DropSpans()))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])

    def instrumented(engine: Engine) -> None:
        instrument(engine, tracer_provider=tracer_provider, meter_provider=meter_provider)

    def api_only(engine: Engine) -> None:
        instrument(engine, tracer_provider=NoOpTracerProvider(), meter_provider=NoOpMeterProvider())

    def removed(engine: Engine) -> None:
        instrument(engine, tracer_provider=tracer_provider, meter_provider=meter_provider).uninstrument()

    cases: dict[str, Callable[[Engine], object]] = {
        "not instrumented": lambda engine: None,
        "instrumented (SDK, no-op exporter)": instrumented,
        "instrumented, OTel API only (no SDK)": api_only,
        "instrumented, then uninstrumented": removed,
    }
    template = chain(args.tasks)
    per_task: dict[str, list[float]] = {name: [] for name in cases}
    tasks = args.tasks * args.concurrent

    async def measure() -> None:
        for setup in cases.values():  # warm-up
            await one_run(template, args.concurrent, setup)
        for _ in range(args.runs):
            for name, setup in cases.items():
                per_task[name].append(await one_run(template, args.concurrent, setup) / tasks)

    asyncio.run(measure())
    tracer_provider.shutdown()
    meter_provider.shutdown()
    medians = {name: statistics.median(samples) * 1e6 for name, samples in per_task.items()}
    base = medians["not instrumented"]
    print(f"{args.concurrent} chains of {args.tasks} no-op tasks at once, median of {args.runs} runs, CPU per task:")
    for name, value in medians.items():
        print(f"  {name:<36} {value:8.1f} us  ({value / base:.2f}x, {value - base:+.1f} us)")


if __name__ == "__main__":
    main()
