"""Retry policies: attempts, filtering by exception class, delays, events, control."""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from support import Recorder, settle, template

from tukio import Event, RetryPolicy, SkipTask, TemplateError, TukioTaskError, Workflow
from tukio.store import MemoryStore

RUNS: Counter[str] = Counter()
# Per task id: the exceptions to raise on successive attempts (then succeed).
PLAN: dict[str, list[BaseException | str]] = {}


@pytest.fixture
def flaky(registered: Callable[..., Any], task_name: Callable[[str], str]) -> str:
    """A task that raises what PLAN says for its id, one item per attempt, then returns."""
    RUNS.clear()
    PLAN.clear()

    async def flaky_task(event: Event) -> dict[str, Any]:
        tid = asyncio.current_task().template.uid  # type: ignore[union-attr]
        RUNS[tid] += 1
        todo = PLAN.get(tid)
        if todo:
            step = todo.pop(0)
            if step == "hang":
                await asyncio.Event().wait()
            assert isinstance(step, BaseException)
            raise step
        return {**event.data, tid: RUNS[tid]}

    name = task_name("flaky")
    registered(name, flaky_task)
    return name


def retried(name: str, retry: dict[str, Any], **extra: Any) -> Any:
    return template([("a", name, {"retry": retry, **extra}), ("b", name)], {"a": ["b"]})


async def run(tmpl: Any, data: dict[str, Any] | None = None) -> Workflow:
    wf = Workflow(tmpl)
    wf.run(data if data is not None else {"v": 0})
    await asyncio.wait_for(wf, 5)
    return wf


def exec_of(wf: Workflow, tid: str) -> dict[str, Any]:
    entry = {t["id"]: t["exec"] for t in wf.report()["tasks"]}[tid]
    assert entry is not None
    return entry  # type: ignore[no-any-return]


async def test_retry_then_success(flaky: str) -> None:
    PLAN["a"] = [ConnectionError("down"), ConnectionError("still down")]
    wf = await run(retried(flaky, {"max_attempts": 3, "delay": 0.001}))
    assert Counter({"a": 3, "b": 1}) == RUNS
    a = exec_of(wf, "a")
    assert a["state"] == "finished"
    assert [(x["attempt"], x["state"], x["error"]) for x in a["attempts"]] == [
        (1, "exception", "ConnectionError: down"),
        (2, "exception", "ConnectionError: still down"),
    ]
    assert all(x["next_delay"] == pytest.approx(0.001) for x in a["attempts"])
    # The successful attempt's outputs flow on; b is never retried.
    assert wf.tasks_by_id["b"].inputs == {"v": 0, "a": 3}
    assert "attempts" not in exec_of(wf, "b")


async def test_attempts_exhausted(flaky: str) -> None:
    PLAN["a"] = [ValueError(f"bad {i}") for i in range(5)]
    rec = Recorder()
    try:
        wf = await run(retried(flaky, {"max_attempts": 3, "delay": 0.001}))
        await settle()
    finally:
        rec.close()
    assert Counter({"a": 3}) == RUNS
    a = exec_of(wf, "a")
    assert a["state"] == "exception"
    assert a["error"] == "ValueError: bad 2"
    assert [x["attempt"] for x in a["attempts"]] == [1, 2]
    assert exec_of(wf, "a") is not None
    assert {t["id"]: t["exec"] for t in wf.report()["tasks"]}["b"] is None
    assert rec.types("a").count("task-retry") == 2
    assert rec.types("a").count("task-begin") == 3


async def test_max_attempts_one_never_retries(flaky: str) -> None:
    PLAN["a"] = [ValueError("once")]
    wf = await run(retried(flaky, {"max_attempts": 1}))
    assert RUNS["a"] == 1
    assert "attempts" not in exec_of(wf, "a")


@pytest.mark.parametrize(
    ("on", "error", "retried_"),
    [
        (["ConnectionError"], ConnectionRefusedError("refused"), True),  # a subclass
        (["OSError"], ConnectionResetError("reset"), True),  # a base two levels up
        (["builtins.ValueError"], ValueError("qualified"), True),  # module-qualified name
        (["ConnectionError", "TimeoutError"], ValueError("other"), False),
        (["KeyError"], LookupError("base is not enough"), False),  # a base class does not match its subclass
    ],
)
async def test_on_filters_by_class_and_bases(flaky: str, on: list[str], error: Exception, retried_: bool) -> None:
    PLAN["a"] = [error]
    wf = await run(retried(flaky, {"max_attempts": 2, "delay": 0.001, "on": on}))
    assert RUNS["a"] == (2 if retried_ else 1)
    assert exec_of(wf, "a")["state"] == ("finished" if retried_ else "exception")


@pytest.mark.parametrize("error", [SkipTask("skip"), TukioTaskError({"partial": 1})])
async def test_skip_and_task_errors_are_never_retried(flaky: str, error: Exception) -> None:
    PLAN["a"] = [error]
    wf = await run(retried(flaky, {"max_attempts": 3, "delay": 0.001}))
    assert RUNS["a"] == 1
    assert exec_of(wf, "a")["state"] in ("skipped", "exception")


async def test_timeout_is_retried_as_timeout_error(flaky: str) -> None:
    PLAN["a"] = ["hang"]
    rec = Recorder()
    try:
        tmpl = retried(flaky, {"max_attempts": 2, "delay": 0.001, "on": ["TimeoutError"]}, timeout=0.01)
        wf = await run(tmpl)
        await settle()
    finally:
        rec.close()
    assert RUNS["a"] == 2
    a = exec_of(wf, "a")
    assert a["state"] == "finished"
    assert a["attempts"][0]["state"] == "timeout"
    assert a["attempts"][0]["error"].startswith("TimeoutError: timed out after 0.01")
    retry = [e.data["content"] for e in rec.events if e.data.get("type") == "task-retry"]
    assert isinstance(retry[0]["error"], TimeoutError)


async def test_timeout_not_retried_when_on_excludes_it(flaky: str) -> None:
    PLAN["a"] = ["hang"]
    wf = await run(retried(flaky, {"max_attempts": 3, "delay": 0.001, "on": ["ValueError"]}, timeout=0.01))
    assert Counter({"a": 1, "b": 1}) == RUNS  # a timed-out task's outputs still flow
    assert exec_of(wf, "a")["state"] == "timeout"


async def test_retry_events_carry_attempt_error_and_delay(flaky: str) -> None:
    PLAN["a"] = [ConnectionError("one"), ConnectionError("two")]
    rec = Recorder()
    try:
        await run(retried(flaky, {"max_attempts": 3, "delay": 0.002, "backoff": 2.0}))
        await settle()
    finally:
        rec.close()
    retries = [e for e in rec.events if e.data.get("type") == "task-retry"]
    assert [e.data["content"]["attempt"] for e in retries] == [1, 2]
    assert [str(e.data["content"]["error"]) for e in retries] == ["one", "two"]
    assert [e.data["content"]["delay"] for e in retries] == pytest.approx([0.002, 0.004])
    assert all(e.source is not None and e.source.task_template_id == "a" for e in retries)


def test_delays_backoff_max_delay_and_jitter() -> None:
    policy = RetryPolicy(max_attempts=6, delay=1.0, backoff=2.0, max_delay=5.0)
    assert [policy.next_delay(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert RetryPolicy(delay=0.5).next_delay(3) == 0.5  # backoff 1: constant
    jittery = RetryPolicy(delay=1.0, backoff=3.0, jitter=0.1)
    rng = random.Random(7)
    delays = [jittery.next_delay(2, rng) for _ in range(200)]
    assert all(2.7 <= d <= 3.3 for d in delays)
    assert len(set(delays)) > 100
    assert RetryPolicy(delay=0.0, jitter=1.0).next_delay(1) == 0.0


def test_policy_from_dict_and_back() -> None:
    d = {"max_attempts": 3, "delay": 0.5, "backoff": 2.0, "max_delay": 30, "jitter": 0.1, "on": ["ConnectionError"]}
    policy = RetryPolicy.from_dict(d)
    assert policy.on == ("ConnectionError",)
    assert RetryPolicy.from_dict(policy.as_dict()) == policy
    assert RetryPolicy.from_dict({}) == RetryPolicy()


@pytest.mark.parametrize(
    ("retry", "message"),
    [
        ({"max_attempts": 0}, "retry.max_attempts: must be >= 1"),
        ({"max_attempts": 2.5}, "retry.max_attempts: must be an integer"),
        ({"delay": -1}, "retry.delay: must be >= 0"),
        ({"backoff": 0.5}, "retry.backoff: must be >= 1"),
        ({"jitter": 2}, "retry.jitter: must be a fraction"),
        ({"on": "ValueError"}, "retry.on: must be a list"),
        ({"on": [""]}, r"retry.on\[0\]: must be an exception class name"),
        ({"tries": 3}, "retry.tries: unknown field"),
    ],
)
def test_policy_validation(retry: dict[str, Any], message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        RetryPolicy.from_dict(retry)


def test_template_reports_where_the_retry_problem_is(flaky: str) -> None:
    with pytest.raises(TemplateError, match=r"tasks\[0\]\.retry\.delay: must be >= 0"):
        template([("a", flaky, {"retry": {"delay": -1}})], {"a": []})
    tmpl = retried(flaky, {"max_attempts": 2})
    assert tmpl.as_dict()["tasks"][0]["retry"]["max_attempts"] == 2
    assert "retry" not in tmpl.as_dict()["tasks"][1]


async def wait_for_retry(rec: Recorder, count: int = 1) -> None:
    for _ in range(10_000):
        if rec.types("a").count("task-retry") >= count:
            return
        await asyncio.sleep(0)
    raise AssertionError("no task-retry event")


async def test_cancel_during_a_pending_retry(flaky: str) -> None:
    PLAN["a"] = [ConnectionError("down")]
    rec = Recorder()
    try:
        wf = Workflow(retried(flaky, {"max_attempts": 3, "delay": 30}))
        wf.run({"v": 0})
        await wait_for_retry(rec)
        assert wf.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(wf, 1)
    finally:
        rec.close()
    assert RUNS["a"] == 1
    assert wf.report()["exec"]["state"] == "cancelled"


async def test_suspend_during_a_pending_retry_then_resume(flaky: str) -> None:
    PLAN["a"] = [ConnectionError("down")]
    rec = Recorder()
    try:
        wf = Workflow(retried(flaky, {"max_attempts": 3, "delay": 30}))
        wf.run({"v": 0})
        await wait_for_retry(rec)
        assert wf.suspend()
        await settle()
        assert not wf.done()
        assert RUNS["a"] == 1  # the pending retry was dropped, not run
        assert wf.resume()
        await asyncio.wait_for(wf, 5)
    finally:
        rec.close()
    assert Counter({"a": 2, "b": 1}) == RUNS
    assert exec_of(wf, "a")["state"] == "finished"


async def test_retries_are_journaled_and_counted_after_recovery(flaky: str) -> None:
    """The journal records each failed attempt; a rescue goes on counting them."""
    PLAN["a"] = [ConnectionError("one"), ConnectionError("two"), ConnectionError("three")]
    store = MemoryStore()
    from tukio import Engine

    engine = Engine(store=store)
    tmpl = retried(flaky, {"max_attempts": 2, "delay": 30})
    rec = Recorder()  # first: the root may fail once before run_once() returns (once its begin is committed)
    try:
        wf = await engine.run_once(tmpl, {"v": 0})
        assert wf is not None
        await wait_for_retry(rec, 1)
    finally:
        rec.close()
    await engine.flush()
    stored = {t["id"]: t["exec"] for t in store.load(wf.uid)["tasks"]}["a"]
    assert stored["state"] == "pending"  # a crash now would run it again
    assert [x["attempt"] for x in stored["attempts"]] == [1]
    wf.cancel()
    with pytest.raises(asyncio.CancelledError):
        await wf
    await engine.flush()
    report = store.load(wf.uid)
    assert report["exec"]["state"] == "cancelled"
    # Rescue the journaled report (as recovery would): one attempt is left.
    PLAN["a"] = [ConnectionError("two")]
    again = Workflow(tmpl)
    again.fast_forward(report)
    await asyncio.wait_for(again, 5)
    a = exec_of(again, "a")
    assert a["state"] == "exception"
    assert [x["attempt"] for x in a["attempts"]] == [1]
    assert RUNS["a"] == 2
    await engine.stop(force=True)


async def test_each_retry_logs_one_line_and_only_the_last_failure_a_traceback(
    flaky: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tukio")
    PLAN["a"] = [ConnectionError("reset"), ConnectionError("reset"), ConnectionError("reset")]
    wf = await run(retried(flaky, {"max_attempts": 3, "delay": 0}))
    assert exec_of(wf, "a")["state"] == "exception"
    about_a = [r for r in caplog.records if " task a " in r.getMessage() or r.getMessage().endswith(" task a")]
    retries = [r for r in about_a if "retrying in" in r.getMessage()]
    assert [r.getMessage().split(" task a ")[1] for r in retries] == [
        "attempt 1 failed (ConnectionError: reset); retrying in 0s",
        "attempt 2 failed (ConnectionError: reset); retrying in 0s",
    ]
    assert all(r.exc_info is None for r in retries)
    [final] = [r for r in about_a if r.exc_info is not None]
    assert final.levelno == logging.ERROR
    assert final is about_a[-1]
    assert len(about_a) == 3  # two retries, then the failure with its traceback


async def test_a_timed_out_attempt_logs_the_retry_only(flaky: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tukio")
    PLAN["a"] = ["hang"]
    wf = await run(retried(flaky, {"max_attempts": 2, "delay": 0}, timeout=0.01))
    assert exec_of(wf, "a")["state"] == "finished"
    messages = [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if m.endswith("task a timed out")]
    assert len([m for m in messages if "task a attempt 1 failed (TimeoutError" in m]) == 1
