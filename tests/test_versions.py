"""Template versions: executions pinned to the definition they began with (issue 20)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from support import template

from tukio import Engine, Event, TaskRegistry, Workflow, WorkflowTemplate
from tukio._versions import VersionProblem, Versions
from tukio.cli import main as cli_main
from tukio.errors import MigrationError, UnknownVersionError
from tukio.store import MemoryStore, PostgresStore, SQLiteStore, Store
from tukio.store.base import ExecutionRecord, Record
from tukio.workflow.template import version_of

# What each task ran: (exec id, task id, version of the workflow's template).
RAN: list[tuple[str, str, str]] = []
GATES: dict[str, asyncio.Event] = {}


class FrozenMemory(MemoryStore):
    """A memory store that can stop writing, as if its process had died."""

    frozen = False

    def write(self, records: Sequence[Record]) -> None:
        if not self.frozen:
            super().write(records)


class FrozenSQLite(SQLiteStore):
    """The same for SQLite."""

    frozen = False

    def write(self, records: Sequence[Record]) -> None:
        if not self.frozen:
            super().write(records)

    def write_nowait(self, records: Sequence[Record]) -> bool:
        return True if self.frozen else super().write_nowait(records)


class FrozenPostgres(PostgresStore):
    """The same for PostgreSQL (the journal writes through `write_soon`)."""

    frozen = False

    def write_soon(self, records: Sequence[Record], done: Callable[[BaseException | None], None]) -> bool:
        if self.frozen:
            asyncio.get_running_loop().call_soon(done, None)
            return True
        return super().write_soon(records, done)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Any]]:
    """``stores()``: a store on the same journal each time (one per engine: a shared store attaches a node)."""
    opened: list[Any] = []
    if request.param == "memory":
        memory = FrozenMemory()

        def make() -> Any:
            return memory

    elif request.param == "sqlite":

        def make() -> Any:
            return FrozenSQLite(tmp_path / "journal.db")

    else:
        dsn, schema = request.getfixturevalue("pg_schema")

        def make() -> Any:
            return FrozenPostgres(dsn, schema=schema)

    def new() -> Any:
        made = make()
        opened.append(made)
        return made

    yield new
    for made in opened:
        made.close()


@pytest.fixture
def names(registered: Callable[..., Any], task_name: Callable[[str], str]) -> dict[str, str]:
    """Task names a, b, b2, c, d: each records what it ran; one waits on GATES[its id] when set."""
    RAN.clear()
    GATES.clear()

    async def step(event: Event) -> dict[str, Any]:
        tid = asyncio.current_task().template.uid  # type: ignore[union-attr]
        workflow = Workflow.current_workflow()
        assert workflow is not None
        RAN.append((workflow.uid, tid, workflow.template.version))
        if tid in GATES:
            await GATES[tid].wait()
        return {**event.data, tid: True}

    made = {key: task_name(f"ver-{key}") for key in ("a", "b", "b2", "c", "d")}
    for name in made.values():
        registered(name, step)
    return made


def v1(names: dict[str, str], uid: str = "order", policy: str = "start-new") -> WorkflowTemplate:
    return template(
        [("a", names["a"]), ("b", names["b"]), ("c", names["c"])], {"a": ["b"], "b": ["c"]}, id=uid, policy=policy
    )


def v2(names: dict[str, str], uid: str = "order", policy: str = "start-new") -> WorkflowTemplate:
    """v1 with b renamed b2, and a new task d after a."""
    return template(
        [("a", names["a"]), ("b2", names["b2"]), ("d", names["d"]), ("c", names["c"])],
        {"a": ["b2", "d"], "b2": ["c"], "d": []},
        id=uid,
        policy=policy,
    )


async def crash_while(store: Any, tmpl: WorkflowTemplate, parked: str) -> str:
    """Run `tmpl` until task `parked` runs, then 'crash' (`store` stops writing); return the execution id."""
    GATES[parked] = asyncio.Event()
    engine = Engine(store=store)
    await engine.load(tmpl)
    wf = await engine.trigger(tmpl.uid, {"n": 1})
    assert wf is not None
    for _ in range(10_000):
        if any(tid == parked for _, tid, _ in RAN):
            break
        await asyncio.sleep(0.001 if _ > 100 else 0)
    else:
        pytest.fail(f"task {parked} never started")
    await engine.flush()
    store.frozen = True
    await asyncio.wait_for(engine.stop(force=True), 5)
    store.frozen = False
    del GATES[parked]
    RAN.clear()
    return wf.uid


# -- the version id ------------------------------------------------------------------
def test_the_version_ignores_key_order_whitespace_and_task_order(names: dict[str, str]) -> None:
    one = v1(names)
    as_dict = one.as_dict()
    shuffled = {k: as_dict[k] for k in reversed(list(as_dict))}
    shuffled["tasks"] = list(reversed(as_dict["tasks"]))
    text = json.dumps(shuffled, indent=4)
    assert WorkflowTemplate.from_json(text).version == one.version == version_of(as_dict)
    assert len(one.version) == 16
    assert int(one.version, 16) >= 0
    assert v2(names).version != one.version
    changed = v1(names)
    changed.tasks[0].config = {"retries": 2}
    changed.validate()  # a change made in place counts once validated (Engine.load validates)
    assert changed.version != one.version


async def test_reports_infos_and_the_journal_carry_the_version(
    names: dict[str, str], stores: Callable[[], Any]
) -> None:
    tmpl = v1(names)
    store = stores()
    engine = Engine(store=store)
    await engine.load(tmpl)
    runs = [await engine.trigger("order", {"n": n}) for n in range(3)]
    await asyncio.wait_for(asyncio.gather(*runs), 5)
    await asyncio.wait_for(engine.stop(), 5)
    assert runs[0] is not None
    assert runs[0].report()["exec"]["version"] == tmpl.version
    assert {i.version for i in store.executions()} == {tmpl.version}
    assert store.load(runs[0].uid)["exec"]["version"] == tmpl.version
    assert store.versions() == {tmpl.version: "order"}  # one copy for three executions
    assert store.versions("other") == {}
    assert WorkflowTemplate.from_dict(store.template_version(tmpl.version)).version == tmpl.version
    with pytest.raises(UnknownVersionError, match="no template version 'nope' in the store"):
        store.template_version("nope")


# -- recovery on the version an execution began with ---------------------------------------
async def test_recover_resumes_on_the_old_definition(names: dict[str, str], stores: Callable[[], Any]) -> None:
    old, new = v1(names), v2(names)
    uid = await crash_while(stores(), old, "b")
    store = stores()
    engine = Engine(store=store, lease=60)  # no heartbeat takes it over before recover() below
    await engine.load(new)  # b renamed b2, d added: the running execution keeps a -> b -> c
    [wf] = await engine.recover()
    await asyncio.wait_for(wf, 5)
    assert wf.uid == uid
    assert wf.template.version == old.version
    assert {(tid, version) for _, tid, version in RAN} == {("b", old.version), ("c", old.version)}
    await engine.flush()
    report = store.load(uid)
    assert [t["id"] for t in report["tasks"]] == ["a", "b", "c"]
    assert report["exec"]["version"] == old.version
    assert report["exec"]["state"] == "finished"
    # New triggers run the loaded version, side by side with the old one's executions.
    RAN.clear()
    fresh = await engine.trigger("order", {"n": 2})
    assert fresh is not None
    await asyncio.wait_for(fresh, 5)
    assert {tid for _, tid, _ in RAN} == {"a", "b2", "d", "c"}
    assert {version for _, _, version in RAN} == {new.version}
    await asyncio.wait_for(engine.stop(), 5)
    assert store.versions() == {old.version: "order", new.version: "order"}


async def test_two_versions_run_side_by_side_and_the_policy_counts_both(names: dict[str, str]) -> None:
    store = FrozenMemory()
    old, new = v1(names, policy="skip"), v2(names, policy="skip")
    GATES["b"] = asyncio.Event()
    engine = Engine(store=store)
    await engine.load(old)
    first = await engine.trigger("order", {"n": 1})
    await engine.load(new)
    assert first is not None
    assert await engine.trigger("order", {"n": 2}) is None  # v1's instance runs: 'skip' counts it
    assert engine.running("order") == [first]
    GATES["b"].set()
    await asyncio.wait_for(first, 5)
    second = await engine.trigger("order", {"n": 3})
    assert second is not None
    assert second.template.version == new.version
    await asyncio.wait_for(second, 5)
    await asyncio.wait_for(engine.stop(), 5)
    assert [i.version for i in store.executions()] == [old.version, new.version]


async def test_a_version_that_cannot_run_here_is_left_with_the_reason(names: dict[str, str]) -> None:
    store = FrozenMemory()
    old = v1(names)
    uid = await crash_while(store, old, "b")
    engine = Engine(store=store)
    await engine.load(v2(names))
    TaskRegistry.unregister(names["b"])  # this process cannot run v1
    assert await engine.recover() == []
    [left] = engine.unrecovered
    assert left.exec_id == uid
    assert left.version == old.version
    assert f"its template version {old.version} cannot run here" in (left.problem or "")
    assert names["b"] in (left.problem or "")
    assert [i.exec_id for i in store.unfinished()] == [uid]
    await asyncio.wait_for(engine.stop(), 5)


async def test_a_stored_template_that_no_longer_validates_is_reported(names: dict[str, str]) -> None:
    store = MemoryStore()
    broken = {"id": "order", "tasks": [{"id": "a", "name": names["a"]}], "graph": {"a": ["ghost"]}}
    store.write(
        [
            ExecutionRecord(
                "x1", "order", "pending", "2026-01-01T00:00:00+00:00", template=json.dumps(broken), version="0" * 16
            )
        ]
    )
    engine = Engine(store=store)
    await engine.load(v1(names))
    assert await engine.recover() == []
    [left] = engine.unrecovered
    assert "its template version 0000000000000000 cannot run here" in (left.problem or "")
    assert "ghost" in (left.problem or "")
    await asyncio.wait_for(engine.stop(), 5)


async def test_an_execution_whose_version_is_missing_says_so(names: dict[str, str]) -> None:
    store = MemoryStore()
    store.write([ExecutionRecord("x1", "order", "pending", "2026-01-01T00:00:00+00:00", version="f" * 16)])
    engine = Engine(store=store)
    await engine.load(v1(names))
    assert await engine.recover() == []
    assert "its template version ffffffffffffffff is not in the store" in (engine.unrecovered[0].problem or "")
    await asyncio.wait_for(engine.stop(), 5)


# -- migrating on purpose --------------------------------------------------------------
async def test_migrate_refuses_a_committed_task_without_counterpart(
    names: dict[str, str], stores: Callable[[], Any]
) -> None:
    old, new = v1(names), v2(names)
    uid = await crash_while(stores(), old, "c")  # a and b committed
    store = stores()
    engine = Engine(store=store, lease=60)  # no heartbeat takes it over before recover() below
    await engine.load(new)
    with pytest.raises(MigrationError, match=r"task 'b' ended \(finished\) and has no counterpart in version"):
        await engine.migrate([uid], new)
    with pytest.raises(MigrationError, match="the mapping names task 'zz', which its version does not have"):
        await engine.migrate([uid], new, {"b": "b2", "zz": "d"})
    with pytest.raises(MigrationError, match="not a task of version"):
        await engine.migrate([uid], new, {"b": "nope"})
    with pytest.raises(MigrationError, match="execution missing: not in the store"):
        await engine.migrate(["missing"], new, {"b": "b2"})
    with pytest.raises(UnknownVersionError):
        await engine.migrate([uid], "0123456789abcdef", {"b": "b2"})
    assert store.load(uid)["exec"]["version"] == old.version  # nothing moved
    assert await engine.migrate([uid], new, {"b": "b2"}) == new.version
    report = store.load(uid)
    assert report["exec"]["version"] == new.version
    assert {t["id"]: (t["exec"] or {}).get("state") for t in report["tasks"]} == {
        "a": "finished",
        "b2": "finished",
        "d": None,
        "c": "pending",  # it was running: it runs again
    }
    [wf] = await engine.recover()
    await asyncio.wait_for(wf, 5)
    assert sorted(tid for _, tid, _ in RAN) == ["c", "d"]
    assert {version for _, _, version in RAN} == {new.version}
    with pytest.raises(MigrationError, match="it has ended"):
        await engine.migrate([uid], old)
    await asyncio.wait_for(engine.stop(), 5)


async def test_migrate_refuses_an_execution_running_here(names: dict[str, str]) -> None:
    GATES["a"] = asyncio.Event()
    engine = Engine(store=MemoryStore())
    await engine.load(v1(names))
    wf = await engine.trigger("order", {"n": 1})
    assert wf is not None
    with pytest.raises(MigrationError, match=f"execution {wf.uid}: it runs in this engine"):
        await engine.migrate([wf.uid], v2(names))
    GATES["a"].set()
    await asyncio.wait_for(engine.stop(), 5)
    with pytest.raises(RuntimeError, match="no store"):
        await Engine().migrate([wf.uid], v2(names))


def test_a_store_that_keeps_no_versions(names: dict[str, str]) -> None:
    class Bare(Store):
        def write(self, records: Sequence[Record]) -> None: ...
        def executions(self, **_: Any) -> list[Any]:
            return []

        def load(self, exec_id: str) -> dict[str, Any]:
            raise KeyError(exec_id)

        def prune(self, **_: Any) -> int:
            return 0

    bare = Bare()
    assert bare.versions() == {}
    with pytest.raises(NotImplementedError, match="Bare cannot move executions"):
        bare.repin("x", "v", "{}", {})


# -- the command line ---------------------------------------------------------------------
async def test_the_cli_shows_versions_and_migrates(
    names: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "journal.db"
    old, new = v1(names), v2(names)
    with FrozenSQLite(path) as first:
        uid = await crash_while(first, old, "c")
    store = str(path)
    assert cli_main(["inspect", "--store", store]) == 0
    out = capsys.readouterr().out
    assert "VERSION" in out
    assert f"{uid}  pending  order     {old.version}" in out
    assert cli_main(["show", "--store", store]) == 0
    assert f"{old.version}  order" in capsys.readouterr().out
    assert cli_main(["show", "--store", store, "--version", old.version]) == 0
    assert json.loads(capsys.readouterr().out) == old.as_dict()
    assert cli_main(["show", "--store", store, "--version", "nope"]) == 2
    assert "no template version 'nope' in the store" in capsys.readouterr().err
    assert cli_main(["show"]) == 2
    assert cli_main(["show", "json", "--version", "x"]) == 2
    assert "--version needs --store" in capsys.readouterr().err
    # Migrating: refused while a finished task has no counterpart, then done with a mapping.
    new_file = tmp_path / "v2.json"
    new_file.write_text(json.dumps(new.as_dict()))
    assert cli_main(["migrate", "--store", store, "--to", str(new_file), uid]) == 2
    err = capsys.readouterr().err
    assert "migration refused, nothing changed" in err
    assert f"execution {uid}: task 'b' ended (finished) and has no counterpart in version {new.version}" in err
    assert cli_main(["migrate", "--store", store, "--to", str(new_file), "--map", "b", uid]) == 2
    assert "--map: expected OLD=NEW, got 'b'" in capsys.readouterr().err
    assert cli_main(["migrate", "--store", store, "--to", "0123456789abcdef", uid]) == 2
    assert "no template version '0123456789abcdef' in the store" in capsys.readouterr().err
    assert cli_main(["migrate", "--store", store, "--to", str(new_file), "--map", "b=b2", uid]) == 0
    assert f"1 execution(s) now run on version {new.version}" in capsys.readouterr().out
    with SQLiteStore(path) as again:
        assert again.load(uid)["exec"]["version"] == new.version
        # Back again by version id: the store keeps both.
        assert cli_main(["migrate", "--store", store, "--to", old.version, "--map", "b2=b", uid]) == 0
        assert again.load(uid)["exec"]["version"] == old.version


async def test_the_policy_counts_every_version_across_nodes(names: dict[str, str], pg_schema: tuple[str, str]) -> None:
    # (On PostgreSQL: nodes of one SQLite file need processes of their own, as their locks are per process.)
    stores = [PostgresStore(*pg_schema[:1], schema=pg_schema[1]) for _ in range(2)]
    old_node = Engine(store=stores[0], node="old", lease=30)
    new_node = Engine(store=stores[1], node="new", lease=30)
    await old_node.load(v1(names, policy="skip"))
    await new_node.load(v2(names, policy="skip"))
    GATES["b"] = asyncio.Event()
    first = await old_node.trigger("order", {"n": 1})
    assert first is not None
    assert await new_node.trigger("order", {"n": 2}) is None  # v1 runs on the other node: skipped
    GATES["b"].set()
    await asyncio.wait_for(first, 5)
    await old_node.flush()
    second = await new_node.trigger("order", {"n": 3})
    assert second is not None
    await asyncio.wait_for(second, 5)
    await asyncio.wait_for(asyncio.gather(old_node.stop(), new_node.stop()), 10)
    assert sorted(i.version for i in stores[1].executions()) == sorted(
        [first.template.version, second.template.version]
    )
    for store in stores:
        store.close()


async def test_the_versions_an_engine_can_run(names: dict[str, str]) -> None:
    store = MemoryStore()
    old, new = v1(names), v2(names)
    other = v1(names, uid="other")
    broken = {"id": "order", "tasks": [{"id": "a", "name": "nowhere"}], "graph": {}}

    def begin(exec_id: str, template_id: str, blob: str, version: str) -> ExecutionRecord:
        return ExecutionRecord(exec_id, template_id, "finished", None, template=blob, version=version)

    store.write(
        [
            begin("x1", "order", json.dumps(old.as_dict()), old.version),
            begin("x2", "other", json.dumps(other.as_dict()), other.version),
            begin("x3", "order", json.dumps(broken), "b" * 16),
            begin("x4", "order", "{not json", "d" * 16),
        ]
    )
    versions = Versions({"order": new}.get, lambda: ["order"])
    assert await versions.runnable(store) == {new.version, old.version}  # not other's, not the broken ones
    assert "unknown task name 'nowhere'" in (versions.problem("b" * 16) or "")
    assert f"its template version {'d' * 16} cannot be read" in (versions.problem("d" * 16) or "")
    assert versions.problem(None) is None
    versions.forget_problems()
    assert versions.problem("b" * 16) is None
    with pytest.raises(VersionProblem, match="template other is not loaded"):
        versions.resolve("other", {**other.as_dict(), "exec": {"version": other.version}})


async def test_an_execution_from_before_versions_runs_on_its_own_copy(names: dict[str, str]) -> None:
    store = MemoryStore()
    old = v1(names)
    # As a release before versions journaled it: a template copy, no version.
    store.write(
        [
            ExecutionRecord(
                "x1", "order", "pending", "2026-01-01T00:00:00+00:00", template=json.dumps(old.as_dict()), event="{}"
            )
        ]
    )
    engine = Engine(store=store)
    await engine.load(v2(names))
    [wf] = await engine.recover()
    await asyncio.wait_for(wf, 5)
    assert wf.template.version == old.version
    assert [tid for _, tid, _ in RAN] == ["a", "b", "c"]
    await asyncio.wait_for(engine.stop(), 5)
    assert store.load("x1")["exec"]["version"] == old.version


def test_repin_needs_an_unfinished_execution(stores: Callable[[], Any]) -> None:
    store = stores()
    with pytest.raises(KeyError, match="no unfinished execution 'missing' in the store"):
        store.repin("missing", "0" * 16, "{}", {})
