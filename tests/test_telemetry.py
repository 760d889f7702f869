"""`tukio.telemetry`: spans and metrics from an instrumented engine (OpenTelemetry SDK, in memory)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from support import template

pytest.importorskip("opentelemetry.sdk", reason="the otel tests need opentelemetry-sdk (requirements-dev.txt)")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from tukio import Engine, Workflow
from tukio.errors import TukioError
from tukio.recorder import NULL_RECORDER, Recorder, Recorders
from tukio.store import MemoryStore
from tukio.telemetry import Instrumentation, instrument, prometheus_text


class Otel:
    """An SDK tracer provider and meter provider that keep everything in memory."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def named(self, prefix: str) -> list[ReadableSpan]:
        return [span for span in self.finished() if span.name.startswith(prefix)]

    def points(self, name: str) -> list[Any]:
        """The data points of metric `name` (empty when it was never recorded)."""
        data = self.reader.get_metrics_data()
        found: list[Any] = []
        for resource in data.resource_metrics if data is not None else []:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        found.extend(metric.data.data_points)
        return found

    def total(self, name: str, **attributes: Any) -> float:
        """The sum of metric `name` over the points whose attributes include `attributes`."""
        points = self.points(name)
        return sum(p.value for p in points if attributes.items() <= dict(p.attributes).items())

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


@pytest.fixture
def otel() -> Iterator[Otel]:
    made = Otel()
    yield made
    made.shutdown()


@pytest.fixture
def tasks(registered: Callable[..., Any], task_name: Callable[[str], str]) -> dict[str, str]:
    """Task names: 'ok' (returns its input), 'boom' (raises), 'flaky' (fails its first attempt), 'listen'."""
    calls: list[int] = []

    async def ok(event: Any) -> Any:
        return event.data

    async def boom(event: Any) -> None:
        raise ValueError("boom")

    async def flaky(event: Any) -> str:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("first attempt")
        return "done"

    async def listen(event: Any) -> int:
        task = asyncio.current_task()
        got = await task.queue.get()  # type: ignore[union-attr]
        return int(got.data["n"])

    names = {key: task_name(key) for key in ("ok", "boom", "flaky", "listen")}
    for key, fn in (("ok", ok), ("boom", boom), ("flaky", flaky), ("listen", listen)):
        registered(names[key], fn)
    return names


@pytest.fixture
async def instrumented(otel: Otel) -> AsyncIterator[tuple[Engine, Instrumentation]]:
    engine = Engine()
    made = instrument(engine, tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider)
    yield engine, made
    await asyncio.wait_for(engine.stop(force=True), 10)


async def test_spans_of_an_execution_and_its_tasks(
    otel: Otel, instrumented: tuple[Engine, Instrumentation], tasks: dict[str, str]
) -> None:
    engine, _ = instrumented
    tmpl = template([("a", tasks["ok"]), ("b", tasks["ok"])], {"a": ["b"]}, id="tele-ok")
    tracer = otel.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("trigger") as trigger:
        workflow = await engine.run_once(tmpl, {"n": 1})
    await workflow
    [execution] = otel.named("tukio.execution")
    assert execution.parent is not None
    assert execution.parent.span_id == trigger.get_span_context().span_id
    attributes = dict(execution.attributes or {})
    assert attributes["tukio.template"] == "tele-ok"
    assert attributes["tukio.execution_id"] == workflow.uid
    assert attributes["tukio.state"] == "finished"
    assert "tukio.resumed" not in attributes
    task_spans = {dict(s.attributes or {})["tukio.task_id"]: s for s in otel.named("tukio.task")}
    assert set(task_spans) == {"a", "b"}
    for span in task_spans.values():
        assert span.parent is not None
        assert span.parent.span_id == execution.context.span_id
        assert dict(span.attributes or {})["tukio.attempt"] == 1
        assert dict(span.attributes or {})["tukio.state"] == "finished"
        assert dict(span.attributes or {})["tukio.task"] == tasks["ok"]
    assert otel.total("tukio.executions.started", **{"tukio.template": "tele-ok"}) == 1
    assert otel.total("tukio.executions.finished", **{"tukio.state": "finished"}) == 1
    assert otel.total("tukio.executions.failed") == 0
    assert sum(p.count for p in otel.points("tukio.task.duration")) == 2
    assert otel.total("tukio.executions.queued") == 0


async def test_a_failed_task_is_an_error(
    otel: Otel, instrumented: tuple[Engine, Instrumentation], tasks: dict[str, str]
) -> None:
    engine, _ = instrumented
    workflow = await engine.run_once(template([("a", tasks["boom"])], {}, id="tele-boom"), {})
    await asyncio.wait([workflow])
    [task] = otel.named("tukio.task")
    assert task.status.status_code is StatusCode.ERROR
    assert "boom" in (task.status.description or "")
    assert [event.name for event in task.events] == ["exception"]
    assert otel.total("tukio.executions.failed", **{"tukio.template": "tele-boom"}) == 1


async def test_each_attempt_has_its_span(
    otel: Otel, instrumented: tuple[Engine, Instrumentation], tasks: dict[str, str]
) -> None:
    engine, _ = instrumented
    tmpl = template([("a", tasks["flaky"], {"retry": {"max_attempts": 2, "delay": 0}})], {}, id="tele-flaky")
    workflow = await engine.run_once(tmpl, {})
    await workflow
    spans = sorted(otel.named("tukio.task"), key=lambda s: dict(s.attributes or {})["tukio.attempt"])
    assert [dict(s.attributes or {})["tukio.attempt"] for s in spans] == [1, 2]
    assert [s.status.status_code for s in spans] == [StatusCode.ERROR, StatusCode.UNSET]
    assert otel.total("tukio.executions.failed") == 0  # the retry succeeded


async def test_events_received_are_span_events(
    otel: Otel, instrumented: tuple[Engine, Instrumentation], tasks: dict[str, str]
) -> None:
    engine, _ = instrumented
    tmpl = template([("w", tasks["listen"], {"topics": ["news"]})], {}, id="tele-listen", topics=[])
    workflow = await engine.run_once(tmpl, {})
    await engine.data_received({"n": 7}, topic="news")
    await workflow
    [task] = otel.named("tukio.task")
    assert [(e.name, dict(e.attributes or {})) for e in task.events] == [("tukio.event", {"tukio.topic": "news"})]


async def test_skipped_by_policy_is_counted(
    otel: Otel, instrumented: tuple[Engine, Instrumentation], tasks: dict[str, str]
) -> None:
    engine, _ = instrumented
    tmpl = template([("w", tasks["listen"], {"topics": ["news"]})], {}, id="tele-skip", topics=["go"], policy="skip")
    await engine.load(tmpl)
    [first] = await engine.data_received({"n": 1}, topic="go") or []
    assert await engine.data_received({"n": 2}, topic="go") == []
    await engine.data_received({"n": 3}, topic="news")
    await first
    assert otel.total("tukio.executions.skipped", **{"tukio.template": "tele-skip"}) == 1


async def test_a_rescued_execution_is_marked_resumed(
    otel: Otel, instrumented: tuple[Engine, Instrumentation], tasks: dict[str, str]
) -> None:
    engine, _ = instrumented
    tmpl = template([("a", tasks["ok"]), ("b", tasks["ok"])], {"a": ["b"]}, id="tele-rescue")
    first = await Engine().run_once(tmpl, {"n": 1})
    await first
    report = first.report()
    for task in report["tasks"]:
        if task["id"] == "b":
            task["exec"] = None  # as if the run had stopped after 'a'
    report["exec"]["end"] = None
    rescued = await engine.rescue(tmpl, report)
    assert rescued is not None
    await rescued
    [execution] = otel.named("tukio.execution")
    assert dict(execution.attributes or {})["tukio.resumed"] is True
    assert [dict(s.attributes or {})["tukio.task_id"] for s in otel.named("tukio.task")] == ["b"]


async def test_takeovers_and_lease_losses_are_counted(
    otel: Otel, instrumented: tuple[Engine, Instrumentation], tasks: dict[str, str]
) -> None:
    """As the engine tells them (through its listeners): a taken-over execution's span is marked resumed."""
    _, made = instrumented
    recorders = Recorders(NULL_RECORDER, (made.listener,))
    recorders.executions_lost(["z"])
    tmpl = template([("a", tasks["ok"])], {}, id="tele-taken")
    workflow = Workflow(tmpl, recorder=recorders)
    recorders.executions_taken_over([workflow.uid, "y"])
    workflow.run({"n": 1})
    await workflow
    assert otel.total("tukio.takeovers") == 2
    assert otel.total("tukio.lease_losses") == 1
    [execution] = otel.named("tukio.execution")
    assert dict(execution.attributes or {})["tukio.resumed"] is True


async def test_uninstrument(otel: Otel, instrumented: tuple[Engine, Instrumentation], tasks: dict[str, str]) -> None:
    engine, made = instrumented
    made.uninstrument()
    await (await engine.run_once(template([("a", tasks["ok"])], {}, id="tele-off"), {}))
    assert otel.finished() == []
    with pytest.raises(ValueError, match="does not listen"):
        made.uninstrument()


async def test_listeners_with_a_store(otel: Otel, tasks: dict[str, str]) -> None:
    """With a journal, the journal still decides what the workflow waits for; the listener is told too."""
    engine = Engine(store=MemoryStore())
    made = instrument(engine, tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider)
    try:
        with pytest.raises(ValueError, match="already listens"):
            engine.add_listener(made.listener)
        await (await engine.run_once(template([("a", tasks["ok"])], {}, id="tele-store"), {"n": 2}))
        assert len(otel.named("tukio.task")) == 1
        made.uninstrument()
    finally:
        await asyncio.wait_for(engine.stop(force=True), 10)


async def test_a_failing_listener_does_not_stop_the_others(tasks: dict[str, str]) -> None:
    seen: list[str] = []
    reported: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, context: reported.append(context))

    class Failing(Recorder):
        def task_started(self, workflow: Any, task_id: str) -> None:
            raise RuntimeError("listener broke")

    class Noting(Recorder):
        def task_started(self, workflow: Any, task_id: str) -> None:
            seen.append(task_id)

    engine = Engine()
    engine.add_listener(Failing())
    engine.add_listener(Noting())
    try:
        workflow = await engine.run_once(template([("a", tasks["ok"])], {}, id="tele-fail"), {})
        await workflow
        assert workflow.result() is not None or workflow.done()
        assert seen == ["a"]
        assert [str(c["exception"]) for c in reported] == ["listener broke"]
    finally:
        await asyncio.wait_for(engine.stop(force=True), 10)


def test_import_tukio_imports_no_extra() -> None:
    code = (
        "import sys, tukio, tukio.engine, tukio.cli\n"
        "extras = sorted(m for m in sys.modules if m.split('.')[0] in ('opentelemetry', 'starlette', 'uvicorn'))\n"
        "print(extras)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_without_opentelemetry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    with pytest.raises(TukioError, match=r"pip install 'tukio\[otel\]'"):
        instrument(Engine.__new__(Engine))


async def test_prometheus_text_of_the_instruments(
    otel: Otel, instrumented: tuple[Engine, Instrumentation], tasks: dict[str, str]
) -> None:
    engine, _ = instrumented
    prom = template([("a", tasks["ok"])], {}, id="tele-prom")
    await (await engine.run_once(prom, {}))
    lines = prometheus_text(otel.reader).splitlines()
    assert "# TYPE tukio_executions_started_total counter" in lines
    assert f'tukio_executions_started_total{{tukio_template="tele-prom",tukio_version="{prom.version}"}} 1' in lines
    assert "tukio_executions_queued 0" in lines
    buckets = [line for line in lines if line.startswith("tukio_task_duration_bucket")]
    assert buckets[-1].endswith(" 1")
    assert 'le="+Inf"' in buckets[-1]
    assert any(line.startswith('tukio_task_duration_count{tukio_template="tele-prom"') for line in lines)
    assert prometheus_text(InMemoryMetricReader()) == ""  # a reader of no provider: nothing


async def test_the_global_providers_are_used_never_set(otel: Otel, tasks: dict[str, str]) -> None:
    from opentelemetry import metrics, trace

    before = (trace.get_tracer_provider(), metrics.get_meter_provider())
    engine = Engine()
    try:
        made = instrument(engine)  # the global providers: OpenTelemetry's no-op ones here
        await (await engine.run_once(template([("a", tasks["ok"])], {}, id="tele-global"), {}))
        instrument(engine, tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider)
        assert (trace.get_tracer_provider(), metrics.get_meter_provider()) == before
        made.uninstrument()
    finally:
        await asyncio.wait_for(engine.stop(force=True), 10)
