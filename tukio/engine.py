"""`Engine`: starts workflows when data arrives, under their overrun policy."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
from collections.abc import Callable, Coroutine, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from tukio._loop import resolve_loop
from tukio._report import describe_error
from tukio._versions import VersionProblem, Versions
from tukio.broker import get_broker
from tukio.cluster import Cluster, LeasedStore, listen_mark
from tukio.errors import DamagedRecordError, MigrationError, RescueError
from tukio.event import Event
from tukio.flow._engine import EngineFlow
from tukio.flow.control import FlowControl, FlowError, FlowHost, FlowRequest
from tukio.policy import OverrunPolicy
from tukio.recorder import NULL_RECORDER, Recorder, Recorders, Written
from tukio.selector import WorkflowSelector
from tukio.store.base import UNFINISHED, ExecutionInfo
from tukio.store.journal import Journal
from tukio.store.migrate import migrate
from tukio.task._start import EAGER_SUPPORTED
from tukio.task.factory import install_factory
from tukio.utils import Listen, TimeoutHandle  # noqa: F401 - Listen: the original's namespace
from tukio.workflow.overrun import admit
from tukio.workflow.template import WorkflowTemplate
from tukio.workflow.workflow import Workflow

if TYPE_CHECKING:
    from tukio.store.base import Store

__all__ = ["Engine"]

log = logging.getLogger(__name__)


def _check_template(template: object) -> None:
    if not isinstance(template, WorkflowTemplate):
        raise TypeError(f"expected a WorkflowTemplate or its dict, got {type(template).__name__}")


async def _committed(begun: list[Written]) -> None:
    """Wait until each of `begun` (workflows' begin records) is committed.

    A begin that could not be stored (its data cannot be serialized) fails
    its workflow, not the caller: its error is not raised here.
    """
    for written in begun:
        if not written.done():
            with contextlib.suppress(Exception):
                await written


class _Running:
    """The running instances of one template id, and how many are locked."""

    __slots__ = ("instances", "locked", "on_unlock")

    def __init__(self) -> None:
        self.instances: dict[str, Workflow] = {}
        self.locked = 0
        # One bound method for every instance's lock (not one object per workflow).
        self.on_unlock = self.unlocked

    def unlocked(self) -> None:
        """One of the instances unlocked (a lock release callback)."""
        self.locked -= 1


class Engine(EngineFlow, asyncio.Future):  # type: ignore[type-arg]
    """Loads workflow templates and runs them when data arrives.

    The engine installs `tukio_factory` on its loop; a task factory already
    installed there (``asyncio.eager_task_factory``, say) keeps handling
    every coroutine that is not a tukio task (see `ChainedFactory`). As in the original, it
    is an `asyncio.Future`: await it (or use `done()`, `result()`,
    `add_done_callback()`, `asyncio.wait([engine])`); its result, None, is
    set once `stop()` was called and no workflow runs any more (with a
    store, once their last records are written and the node's cluster
    tasks have ended). Cancelling it (``asyncio.wait_for(engine, t)`` timing
    out, say) stops the engine as ``stop(force=True)`` does; the future ends
    cancelled once the engine has stopped (see `cancel`).

    With a store, `trigger()`, `data_received()` and `run_once()` return
    once the begin record of each execution they start, with its data, is
    committed: what they return is never lost.

    Args:
        selector: decides which loaded templates data triggers (a
            `WorkflowSelector` when None).
        loop: the loop to run on (the running loop when None).
        store: journals every workflow and task transition (see
            `tukio.store`); `recover()` resumes what a crash interrupted.
        node: with a store shared by several engines (`PostgresStore`, `SQLiteStore`),
            this engine's name in the cluster (see `tukio.cluster`; a name
            unique to this engine when None). Restarted under the same name,
            an engine takes its unfinished executions back at once.
        lease: seconds this node stays alive without a heartbeat, after
            which the other nodes take its executions over.
        eager_start: on Python 3.12+, start each workflow task eagerly: it
            runs at once, inside the call that starts it, up to its first
            suspension, instead of on the next turn of the loop (ignored
            before 3.12). A task that ends within that first step has its
            end handled there too: its successors start, and the workflow
            may end. The visible difference: the workflow runs inside the
            call that starts it up to the first ``await`` where one of its
            tasks really waits, so `trigger()`, `data_received()` or the
            parent task's end may return a workflow already done. Nesting
            is bounded: past `EAGER_DEPTH` levels, tasks start (and ends
            are handled) on the next turn as usual.
        max_running: at most this many workflows of this engine run at once,
            whatever their template; the others wait in the queue (see
            `tukio.flow` and the flow-control guide).
        flow: what admits executions under the templates' limits (a
            `LocalFlow` when None: in memory, for this process); give a
            `LocalFlow(max_running=..., clock=...)` to set its clock or key
            retention.

    An engine belongs to one loop: made where no loop runs yet (at module
    level), it takes the current loop of the thread, and works once that
    loop runs (``loop.run_until_complete``). Used from another loop (the one
    ``asyncio.run()`` makes), its coroutine methods raise `RuntimeError` at
    once, saying so, rather than start workflows that would never run.

    Raises:
        ValueError: `node` is given but the store cannot be shared, `lease`
            is not positive, `max_running` is not a positive integer, or both
            `max_running` and `flow` are given.
        RuntimeError: `flow` already serves another engine.
    """

    _journal: Journal | None = None
    _cluster: Cluster | None = None
    _recorder: Recorder = NULL_RECORDER
    # Set by `cancel()`: (its message,); the future ends cancelled once the engine has stopped.
    _cancel_asked: tuple[Any] | None = None
    # Waits for the cluster's tasks to end, once the engine stopped.
    _closing: asyncio.Task[None] | None = None

    def __init__(
        self,
        *,
        selector: WorkflowSelector | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        store: Store | None = None,
        node: str | None = None,
        lease: float = 5.0,
        eager_start: bool = False,
        max_running: int | None = None,
        flow: FlowControl | None = None,
    ) -> None:
        super().__init__(loop=resolve_loop(loop))
        install_factory(self._loop)
        self._eager_start = eager_start and EAGER_SUPPORTED
        self.selector = selector if selector is not None else WorkflowSelector()
        self._broker = get_broker(self._loop)
        self._instances: dict[str, Workflow] = {}
        self._running: dict[str, _Running] = {}
        # The group of a template whose last instance ended, kept for the next
        # template that starts one: with one workflow at a time (eager start),
        # each trigger would otherwise make one, and leave it as cyclic garbage.
        self._spare: _Running | None = None
        # One bound method for every workflow's end (not one object per workflow).
        self._on_workflow_done = self._workflow_done
        self._stopping = False
        self._unrecovered: list[ExecutionInfo] = []
        self._resuming: set[str] = set()
        templates = lambda: [t.uid for t in self.selector.templates]  # noqa: E731
        self._versions = Versions(self.selector.get, templates)
        if store is not None:
            if isinstance(store, LeasedStore):
                self._cluster = Cluster(
                    store,
                    node,
                    lease,
                    self._loop,
                    self._instances,
                    templates,
                    self._take_over,
                    self._remote_data,
                    versions=functools.partial(self._versions.runnable, store),
                )
                self._cluster.start()
            elif node is not None:
                raise ValueError(f"node={node!r} needs a store that several engines can share, not {store!r}")
            self._journal = self._recorder = Journal(store, self._loop)
            if self._cluster is not None:
                self._cluster.on_lost = self._lost
                if self._cluster.store.shares_events:  # a listening task taken over gets the events it missed
                    fetch = functools.partial(self._cluster.store.events_after, everyone=True)
                    self._journal.share_events(functools.partial(listen_mark, self._loop), fetch)
        self._flow_launched = False  # set once the flow launched a workflow: only then is it told of ends
        host = FlowHost(
            self._launch_admitted,
            self._instances.get,
            store,
            self.selector.get,
            lambda: self.selector.templates,
            self._resume_admitted,
            self._after_commit,
            self._journal.begun_in_store if self._journal is not None else None,
        )
        self._init_flow(flow, max_running, host, shared=self._cluster is not None)

    # -- listeners ---------------------------------------------------------------
    def add_listener(self, listener: Recorder) -> None:
        """Tell `listener` of every transition of the workflows started from now on.

        A listener (tracing, metrics: see `tukio.telemetry`) observes; it never
        delays a workflow. Workflows already running are not told. An engine
        without listeners pays nothing for them.

        Args:
            listener: a `Recorder` whose methods are called at each transition.

        Raises:
            ValueError: `listener` was already added.
        """
        listeners = self._recorder.listeners if isinstance(self._recorder, Recorders) else ()
        if listener in listeners:
            raise ValueError(f"{listener!r} already listens to this engine")
        primary = self._journal if self._journal is not None else NULL_RECORDER
        self._recorder = Recorders(primary, (*listeners, listener))

    def remove_listener(self, listener: Recorder) -> None:
        """Stop telling `listener` of the transitions of workflows started from now on.

        Raises:
            ValueError: `listener` does not listen to this engine.
        """
        listeners = self._recorder.listeners if isinstance(self._recorder, Recorders) else ()
        if listener not in listeners:
            raise ValueError(f"{listener!r} does not listen to this engine")
        rest = tuple(one for one in listeners if one is not listener)
        primary = self._journal if self._journal is not None else NULL_RECORDER
        self._recorder = Recorders(primary, rest) if rest else primary

    def _lost(self, exec_ids: list[str]) -> None:
        self._recorder.executions_lost(exec_ids)

    def _check_loop(self) -> None:
        """Refuse to work on another loop than the engine's (one made before `asyncio.run` started its own).

        Raises:
            RuntimeError: the running loop is not the engine's, saying what to do.
        """
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            return
        if running is not self._loop:
            raise RuntimeError(
                "this Engine belongs to another event loop than the one running (it was made before the loop "
                "started, e.g. at module level before asyncio.run()): its workflows would never run. Make the "
                "Engine inside the coroutine that asyncio.run() runs, or pass loop= the loop that runs it."
            )

    # -- state -------------------------------------------------------------------
    @property
    def instances(self) -> list[Workflow]:
        """The running workflows (a new list)."""
        return list(self._instances.values())

    @property
    def stopping(self) -> bool:
        """True once `stop()` was called."""
        return self._stopping

    def running(self, template_id: str) -> list[Workflow]:
        """The running workflows of the template with that id."""
        group = self._running.get(template_id)
        return list(group.instances.values()) if group is not None else []

    # -- templates ---------------------------------------------------------------
    async def load(self, template: WorkflowTemplate | dict[str, Any]) -> WorkflowTemplate:
        """Validate and load `template`, replacing one with the same id.

        A changed template is a new version (`WorkflowTemplate.version`) for
        the triggers to come. Running instances of a replaced template are
        not touched: they, and the executions `recover()` resumes later, run
        to their end on the version they began with; the overrun policy
        counts the instances of every version.

        Raises:
            TemplateError: the template is invalid (see `WorkflowTemplate.validate`).
            TypeError: `template` is neither a `WorkflowTemplate` nor a dict.
        """
        self._check_loop()
        if isinstance(template, dict):
            template = WorkflowTemplate.from_dict(template)
        _check_template(template)
        template.validate()
        self.selector.add(template)
        self._sync_schedules()
        log.info("template %s loaded", template.uid)
        return template

    async def reload(self, templates: Iterable[WorkflowTemplate]) -> None:
        """Replace every loaded template with `templates` (all or nothing).

        Raises:
            TemplateError: a template is invalid; nothing was changed.
            TypeError: an item is not a `WorkflowTemplate`; nothing was changed.
        """
        self._check_loop()
        templates = list(templates)
        for template in templates:
            _check_template(template)
            template.validate()
        self.selector.load(templates)
        self._sync_schedules()

    async def unload(self, template_id: str) -> WorkflowTemplate:
        """Unload and return the template with that id.

        Raises:
            KeyError: no template has that id.
        """
        self._check_loop()
        template = self.selector.remove(template_id)
        self._sync_schedules()
        return template

    # -- starting workflows ----------------------------------------------------------
    async def data_received(self, data: dict[str, Any] | Event, topic: str | None = None) -> list[Workflow] | None:
        """Dispatch `data` on `topic`, then start the templates it triggers.

        Once `stop()` was called the data is still dispatched (tasks of the
        workflows that are finishing get their events) but no workflow starts.
        With a store shared by several engines, a template whose policy is
        not 'start-new' is started only once the store admitted it under its
        policy, across every engine (see "Overrun policies across nodes" in
        the cluster guide); a template the store could not decide on is
        logged and not started.

        With a store, it returns once the begin records of the workflows
        started (with their data) are committed.

        A template with flow-control settings (see `tukio.flow`) may queue
        its execution instead of starting it: the queued workflow is in the
        list; data lacking its ``concurrency_key`` is logged, and that
        template alone is not started.

        Returns:
            The workflows started or queued, or None once the engine is stopping.

        Raises:
            ValueError: `data` is neither a dict nor an Event.
        """
        self._check_loop()
        broker = self._broker
        if type(data) is dict and self._cluster is None and not broker.has_listeners(() if topic is None else (topic,)):
            # Nobody gets the dispatched event: each workflow's own copy is the only Event made.
            event: Event | None = None
        else:
            event = data if isinstance(data, Event) else Event(data, topic=topic)
            if self._cluster is None:
                broker.dispatch(event, topics=topic)
            else:
                try:
                    # Kept for the listening tasks of the other engines first: dispatched here with its
                    # id, a task taken over after this node died gets it from the store once only.
                    event._id = await self._cluster.publish(event.data, topic)
                finally:  # (here too when the caller gave up waiting: the other nodes may have it)
                    broker.dispatch(event, topics=topic)
        if self._stopping:
            log.debug("engine stopping: data on topic %s dispatched, no workflow started", topic)
            return None
        started = []
        begun: list[Written] = []
        for template in self.selector.select(topic):
            if event is None:
                trigger = Event(data, topic=topic)
            else:
                trigger = Event(event, topic=event.topic, source=event.source)
            if self._flow.governs(template):
                submitted = self._start_flow(template, trigger, None)
                workflow = await submitted if submitted is not None else None
                if workflow is not None:  # started now: its begin commits with the others' (queued: later)
                    begun.append(workflow.begin_recorded)
            elif self._cluster is not None and template.policy is not OverrunPolicy.START_NEW:
                workflow = await self._start_shared(template, trigger)
            else:
                workflow = self._start(template, trigger, begun=begun)
            if workflow is not None:
                started.append(workflow)
        await _committed(begun)
        return started

    async def trigger(
        self,
        template_id: str,
        data: dict[str, Any] | Event,
        timeout: float | None = None,
        *,
        key: str | None = None,
        priority: int | None = None,
        not_before: datetime | float | None = None,
    ) -> Workflow | None:
        """Start the loaded template `template_id` with `data`, policy and limits applying.

        Args:
            template_id: the id of a loaded template.
            data: the data the root task starts with.
            timeout: seconds after which this execution times out, as the
                template's own `timeout` would (None: only the template's).
            key: an idempotency key: while an execution of this template
                triggered with the same key is remembered (running, queued,
                or ended within the flow's key retention; with a store, while
                the store keeps it), that execution is returned and no other
                starts. The execution id is `tukio.flow.key_exec_id(template_id, key)`.
            priority: in the queue of a template with limits, a higher
                priority starts first (0 by default; FIFO within a priority).
            not_before: an aware datetime, or a delay in seconds: the
                execution waits (state 'queued') until then.

        With a store shared by several engines, the policy counts the
        instances of every engine: the store decides, in one transaction (see
        `data_received`). With a store, it returns once the execution's
        begin record (with `data`) is committed. A template with flow-control
        settings, or a trigger with `key`, `priority` or `not_before`, is
        admitted by this engine alone (see the flow-control guide); a queued
        execution's begin is recorded when it starts.

        Returns:
            The workflow, started or queued (a queued one has not started:
            `queued()` lists it; await it for its end, cancel it to drop it);
            for a known `key`, that key's workflow. None: unknown template,
            policy said skip, the engine is stopping, or the key's execution
            is known only from the store (it ran before this process).

        Raises:
            FlowError: the data lacks the template's ``concurrency_key``, or
                `key`, `priority` or `not_before` is invalid.
        """
        self._check_loop()
        template = self.selector.get(template_id)
        if template is None or self._stopping:
            return None
        if key is not None or priority is not None or not_before is not None or self._flow.governs(template):
            request = self._flow.request(template, data, key, priority, not_before)
            if key is not None:
                known = await self._flow.known(request)
                if known is not None:
                    return known if isinstance(known, Workflow) else None
            submitted = self._start_flow(template, Event(data), timeout, request)
            workflow = await submitted if submitted is not None else None
            if workflow is not None:  # durable on return (a queued one's begin is recorded when it starts)
                await _committed([workflow.begin_recorded])
            return workflow
        if self._cluster is not None and template.policy is not OverrunPolicy.START_NEW:
            return await self._start_shared(template, Event(data), timeout)
        begun: list[Written] = []
        workflow = self._start(template, Event(data), timeout, begun)
        await _committed(begun)
        return workflow

    async def run_once(
        self, template: WorkflowTemplate, data: dict[str, Any] | Event, timeout: float | None = None
    ) -> Workflow | None:
        """Run `template` once with `data`, whatever its policy, without loading it.

        Args:
            template: what to run.
            data: the data the root task starts with.
            timeout: seconds after which this execution times out (None:
                only the template's own `timeout`).

        With a store, it returns once the execution's begin record is committed.

        Returns:
            The workflow, or None once the engine is stopping.

        Raises:
            TemplateError: the template is invalid.
        """
        self._check_loop()
        if self._stopping:
            return None
        template.validate()
        workflow = self._new(template)
        self._track(workflow)
        await _committed([self._run(workflow, Event(data), timeout)])
        return workflow

    async def rescue(self, template: WorkflowTemplate, report: dict[str, Any]) -> Workflow | None:
        """Rebuild a workflow from its last report and run it to the end.

        Returns:
            The workflow, or None once the engine is stopping (as the original).

        Raises:
            RescueError: the report cannot be rescued (nothing is left behind).
            TemplateError: the template is invalid.
        """
        self._check_loop()
        if self._stopping:
            return None
        template.validate()
        workflow = self._new(template)
        workflow.fast_forward(report)
        self._track(workflow)
        return workflow

    def _new(self, template: WorkflowTemplate) -> Workflow:
        return Workflow(
            template, loop=self._loop, broker=self._broker, recorder=self._recorder, eager_start=self._eager_start
        )

    # -- the journal -----------------------------------------------------------------
    @property
    def store(self) -> Store | None:
        """The store the engine journals to, or None."""
        return self._journal.store if self._journal is not None else None

    @property
    def node(self) -> str | None:
        """This engine's name in the cluster of engines sharing its store, or None."""
        return self._cluster.node if self._cluster is not None else None

    @property
    def unrecovered(self) -> list[ExecutionInfo]:
        """Unfinished executions the last `recover()` could not resume, each with its `problem`.

        Their template is not loaded, their template version cannot run here
        (a task name not registered, a stored version that no longer
        validates), or a record of theirs is damaged; they stay in the
        store, and a later `recover()` picks them up once that is fixed.
        """
        return list(self._unrecovered)

    async def flush(self) -> None:
        """Wait until every transition recorded so far is durable in the store.

        Raises:
            JournalError: the store failed to write.
        """
        await self._recorder.flush()

    async def recover(self) -> list[Workflow]:
        """Resume every unfinished execution of the store whose template is loaded.

        Each one runs on the template version it began with (the store's copy
        when the loaded template is another version of it), and goes on from
        its journaled report with the same id: tasks
        recorded as done are not run again, tasks that were running run again
        (at least once per task), and the workflow runs to its end. Executions
        of templates not loaded, of a version that cannot run here (a task
        name not registered) and executions whose records are damaged, are
        logged, kept in the store and listed by `unrecovered` with the reason:
        they never stop the others from being resumed. Executions already
        running in this engine are left alone.

        Returns:
            The workflows resumed.

        Raises:
            RuntimeError: the engine has no store.
        """
        self._check_loop()
        if self._journal is None:
            raise RuntimeError("this engine has no store: there is nothing to recover")
        if self._stopping:
            return []
        store = self._journal.store
        self._versions.forget_problems()  # tasks may have been registered since the last time
        await self._journal.flush()  # workflows of this engine that ended are not unfinished
        if self._cluster is not None:  # only this node's own, and dead nodes' executions
            infos = await self._cluster.recoverable()
        else:
            infos = await asyncio.to_thread(store.unfinished)
        recovered, self._unrecovered = await self._resume_all(infos)
        log.info("recovered %d workflow(s), %d left in the store", len(recovered), len(self._unrecovered))
        return recovered

    async def migrate(
        self,
        exec_ids: Iterable[str],
        to: WorkflowTemplate | str,
        mapping: dict[str, str] | None = None,
    ) -> str:
        """Move unfinished executions to another version of their template, on purpose.

        The executions must not run anywhere: those `unrecovered` lists, say,
        or those of stopped engines; `recover()` then resumes them on `to`.
        Each task record moves to its counterpart in `to` (same id, or the
        one `mapping` names); a task that ended must have one (see
        `tukio.store.migrate`).

        Args:
            exec_ids: the executions to move.
            to: the version: a template, or the id of a version the store keeps.
            mapping: old task id -> new task id, for tasks renamed in `to`.

        Returns:
            The version id the executions run on from now on.

        Raises:
            RuntimeError: the engine has no store.
            MigrationError: an execution cannot move (one runs in this
                engine, or see `tukio.store.migrate.migrate`); none moved.
            UnknownVersionError: `to` is a version id the store does not keep.
        """
        if self._journal is None:
            raise RuntimeError("this engine has no store: there is no execution to migrate")
        exec_ids = list(exec_ids)
        running = [f"execution {i}: it runs in this engine" for i in exec_ids if i in self._instances]
        if running:
            raise MigrationError(running)
        await self._journal.flush()
        return await asyncio.to_thread(migrate, self._journal.store, exec_ids, to, mapping)

    async def _resume_admitted(self, template_id: str, exec_ids: list[str]) -> None:
        """Run executions of this node that the store's queue admitted and no workflow here waits for.

        They were queued before this engine (of the same node name) restarted.
        """
        infos = [ExecutionInfo(exec_id, template_id, UNFINISHED, None, None) for exec_id in exec_ids]
        recovered, left = await self._resume_all(infos)
        self._unrecovered.extend(left)
        log.info("started %d queued workflow(s) of an earlier run of this node", len(recovered))

    def _after_commit(self, callback: Callable[[], None]) -> None:
        """Call `callback` once every transition recorded so far is committed (or could not be)."""
        self._recorder.flush().then(lambda _, __: callback(), None)

    def _remote_data(self, data: Any, topic: str | None, event_id: int) -> None:
        """Dispatch data another engine of the cluster received (its workflows were started there)."""
        event = Event(data, topic=topic)
        event._id = event_id
        self._broker.dispatch(event, topics=topic)

    async def _take_over(self, infos: list[ExecutionInfo]) -> None:
        """Resume executions this node just claimed from dead nodes."""
        self._recorder.executions_taken_over([info.exec_id for info in infos])
        recovered, left = await self._resume_all(infos)
        self._unrecovered.extend(left)
        log.info("took over %d workflow(s), %d left in the store", len(recovered), len(left))

    async def _resume_all(self, infos: list[ExecutionInfo]) -> tuple[list[Workflow], list[ExecutionInfo]]:
        assert self._journal is not None
        store = self._journal.store
        recovered: list[Workflow] = []
        left: list[ExecutionInfo] = []
        for info in infos:
            if info.exec_id in self._instances or info.exec_id in self._resuming or self._stopping:
                continue
            self._resuming.add(info.exec_id)
            try:
                workflow, reason = await self._recover_one(store, info)
            finally:
                self._resuming.discard(info.exec_id)
                if self._cluster is not None:
                    self._cluster.resumed([info.exec_id])
            if workflow is not None:
                recovered.append(workflow)
            elif reason:
                left.append(dataclasses.replace(info, problem=reason))
        return recovered, left

    async def _recover_one(self, store: Store, info: ExecutionInfo) -> tuple[Workflow | None, str]:
        """Resume one execution; or log and return why it cannot be (no reason: another node owns it now).

        It never raises: one damaged row must not keep the others from being resumed.
        """
        if info.problem is not None:
            reason = self._versions.problem(info.version) or info.problem
        elif info.template_id is None or self.selector.get(info.template_id) is None:
            reason = f"template {info.template_id} is not loaded"
            log.warning("[%s] not recovered: %s", info.exec_id, reason)
            return None, reason
        else:
            try:
                report = await asyncio.to_thread(store.load, info.exec_id)
                # What its tasks had received, for those that run again.
                events = await asyncio.to_thread(store.task_events, info.exec_id) if store.keeps_events else {}
                if report.get("tasks"):
                    template = self._versions.resolve(info.template_id, report)
                    # Its tasks start now: the node must still own it (it may have been paused since the claim).
                    if self._cluster is not None and not await self._cluster.confirm([info.exec_id]):
                        return None, ""
                    return self._resume_with_events(template, report, events), ""
                reason = "the journal holds no template for it"
            except (DamagedRecordError, RescueError, VersionProblem) as exc:
                reason = str(exc)
            except Exception as exc:
                reason = describe_error(exc)
        log.error("[%s] not recovered: %s", info.exec_id, reason)
        return None, reason

    def _resume_with_events(
        self, template: WorkflowTemplate, report: dict[str, Any], events: dict[str, list[tuple[int, Any]]]
    ) -> Workflow:
        """Resume from `report`; the tasks that run again get the `events` they had received first."""
        journal = self._journal
        exec_id = report["exec"]["id"]
        if journal is None or not events:
            return self._resume(template, report)
        journal.replay(exec_id, events)
        try:
            return self._resume(template, report)
        finally:
            journal.replayed(exec_id)

    def _resume(self, template: WorkflowTemplate, report: dict[str, Any]) -> Workflow:
        workflow = self._new(template)
        root = template.plan().root
        started = root is not None and any(
            t.get("id") == root.uid and t.get("exec") is not None for t in report.get("tasks", [])
        )
        if self._cluster is not None:
            workflow.on_unlock(functools.partial(self._cluster.unlocked, workflow))
        if started:
            workflow.fast_forward(report)
            self._track(workflow)
        else:
            # Only the trigger was recorded: run the workflow from the start, under its id.
            workflow.uid = report["exec"]["id"]
            self._track(workflow)
            event = report["exec"].get("event")
            workflow.run(Event(event) if isinstance(event, dict) else event)
        return workflow

    def _run(self, workflow: Workflow, event: Event, timeout: float | None) -> Written:
        """Run `workflow`; return what resolves once its begin record is committed."""
        workflow.run(event)
        if timeout:
            TimeoutHandle(workflow, timeout).start()
        return workflow.begin_recorded

    def _start(
        self,
        template: WorkflowTemplate,
        event: Event,
        timeout: float | None = None,
        begun: list[Written] | None = None,
    ) -> Workflow | None:
        """Start `template` under its policy, as this engine sees it; add what commits its begin to `begun`."""
        workflow = self._admit(template)
        if workflow is not None:
            written = self._launch(workflow, event, timeout)
            if begun is not None and not written.done():
                begun.append(written)
        return workflow

    def _admit(self, template: WorkflowTemplate) -> Workflow | None:
        """Apply the template's overrun policy to the instances running here: a new workflow, or None."""
        group = self._running.get(template.uid)
        if group is None:
            workflow = admit(template, 0, 0, (), self._new)
        else:
            workflow = admit(template, len(group.instances), group.locked, group.instances.values(), self._new)
        if workflow is None:
            log.debug("template %s: skipped by policy %s", template.uid, template.policy.value)
            self._recorder.workflow_skipped(template)
        return workflow

    def _launch(self, workflow: Workflow, event: Event, timeout: float | None) -> Written:
        self._track(workflow)
        return self._run(workflow, event, timeout)

    def _launch_admitted(self, workflow: Workflow, event: Event, timeout: float | None) -> None:
        """Start a workflow the flow control admitted (told of its end in `_workflow_done`)."""
        self._flow_launched = True
        self._launch(workflow, event, timeout)

    def _start_flow(
        self, template: WorkflowTemplate, event: Event, timeout: float | None, request: FlowRequest | None = None
    ) -> Coroutine[Any, Any, Workflow | None] | None:
        """`_start` through the flow control: the policy first, then the limits (start now, or queue).

        Returns what to await for the workflow (started or queued), or None
        when the policy skipped it. A trigger whose data lacks the template's
        concurrency key fails alone: `data_received` (no `request`) logs it
        and starts the others.
        """
        if request is None:
            try:
                request = self._flow.request(template, event.data)
            except FlowError as exc:
                log.error("template %s: not started: %s", template.uid, exc)
                return None
        workflow = self._admit(template)
        if workflow is None:
            return None
        return self._flow.submit(workflow, event, timeout, request)

    async def _start_shared(
        self, template: WorkflowTemplate, event: Event, timeout: float | None = None
    ) -> Workflow | None:
        """`_start` with a shared store: the store applies the policy across the nodes (see `tukio.cluster`)."""
        assert self._cluster is not None
        workflow = self._new(template)
        try:
            previous = await self._cluster.admit(workflow, event.data, functools.partial(self._counted, template))
        except Exception as exc:  # the store retried what it could: this trigger is lost, not the others
            log.error("template %s: not started, the store could not apply its policy: %s", template.uid, exc)
            return None
        if previous is None:
            log.debug("template %s: skipped by policy %s (across the nodes)", template.uid, template.policy.value)
            self._recorder.workflow_skipped(template)
            return None
        if self._stopping:  # stopped while the store decided: it will not run
            await asyncio.to_thread(self._cluster.store.mark_cancelled, [workflow.uid])
            return None
        self._track(workflow)
        workflow.on_unlock(functools.partial(self._cluster.unlocked, workflow))
        workflow.add_done_callback(self._flush_end)
        if previous:
            workflow.run_after(previous)
        self._run(workflow, event, timeout)
        return workflow

    def _counted(self, template: WorkflowTemplate) -> list[str]:
        """The ids of this engine's instances of `template` that its policy counts.

        Under 'skip-until-unlock' only the locked ones: an unlock here counts
        as the unlocking task's body ends, before the store records it (the
        other nodes see it once recorded: late, never early).
        """
        group = self._running.get(template.uid)
        if group is None:
            return []
        if template.policy is OverrunPolicy.SKIP_UNTIL_UNLOCK:
            return [uid for uid, workflow in group.instances.items() if workflow.locked()]
        return list(group.instances)

    def _flush_end(self, _: object) -> None:
        """Commit a workflow's end now: the other nodes count it as running until then."""
        self._recorder.flush()

    def _track(self, workflow: Workflow) -> None:
        uid = workflow.template.uid
        group = self._running.get(uid)
        if group is None:
            group = self._spare if self._spare is not None else _Running()
            self._spare = None
            self._running[uid] = group
        wid = workflow._uid
        group.instances[wid] = self._instances[wid] = workflow
        if not workflow._unlocked:  # as `locked()`, once per trigger
            group.locked += 1
            workflow.on_unlock(group.on_unlock)
        # Told as the workflow ends (no turn of the loop, no context of its own).
        workflow.on_end(self._on_workflow_done)

    def _workflow_done(self, future: asyncio.Future[Any]) -> None:
        assert isinstance(future, Workflow)
        uid = future.template.uid
        wid = future._uid
        self._instances.pop(wid, None)
        group = self._running.get(uid)
        if group is not None:
            instances = group.instances
            instances.pop(wid, None)
            if not instances and not group.locked:
                del self._running[uid]
                self._spare = group
        if future._error is not None and not future.cancelled() and future.exception() is not None:
            log.error("[%s] workflow %s failed: %s", wid, uid, future.exception())
        if self._flow_launched:
            self._flow.ended(future)
        if self._stopping:
            self._check_stopped()

    # -- stopping ------------------------------------------------------------------
    def stop(self, force: bool = False) -> Engine:
        """Start no new workflow; with `force`, cancel the running ones.

        With no workflow running (and, with a store, nothing left to write)
        the engine is done at once.

        Returns:
            The engine, to be awaited until every workflow has ended.
        """
        self._stopping = True
        self._schedules.close()
        self._flow.close()
        if force:
            for workflow in list(self._instances.values()):
                workflow.cancel()
        self._check_stopped()
        return self

    def cancel(self, msg: Any = None) -> bool:
        """Stop the engine as ``stop(force=True)`` does; the future ends cancelled once it has stopped.

        As with an `asyncio.Task`, cancelling asks the engine to stop: its
        workflows are cancelled, their last records written, its cluster
        closed (heartbeat and listeners end, the lease is given back), and
        only then is the future cancelled. So ``asyncio.wait_for(engine, t)``
        timing out stops the engine cleanly before it raises `TimeoutError`.

        Args:
            msg: the message of the `CancelledError` raised by awaiting the engine.

        Returns:
            False when the engine had already stopped, else True.
        """
        if self.done():
            return False
        self._cancel_asked = (msg,)
        self.stop(force=True)
        return True

    def _check_stopped(self) -> None:
        if self._stopping and not self._instances and not self.done():
            # The last records (workflow ends) are written before the engine is done.
            self._recorder.flush().then(self._flushed, None)

    def _flushed(self, _: None, error: BaseException | None) -> None:
        if self.done() or self._instances or self._closing is not None:
            return
        if self._cluster is None:
            self._stopped()
            return
        # Done once the lease ended (off the loop) and the heartbeat and the listeners have ended
        # too: none outlives the engine.
        cluster = self._cluster
        left = cluster.close()

        async def closed() -> None:
            await asyncio.gather(left, cluster.wait_closed(), return_exceptions=True)

        self._closing = self._loop.create_task(closed(), name="tukio-engine-close")
        self._closing.add_done_callback(self._stopped)

    def _stopped(self, _: object = None) -> None:
        if self.done():
            return
        if self._cancel_asked is None:
            self.set_result(None)
        else:
            super().cancel(self._cancel_asked[0])
