"""The runner: claims `initialised` threads up to `max-running`, runs each as a named task,
cancels cooperatively, heartbeats, recovers threads whose node died, and stops gracefully.

A user's cancel ends the thread `cancelled`, and a job's `timeout` ends it `failed`, once its
code has stopped (until then it keeps its slot, its message saying it is being stopped); a
shutdown hands it back: it runs again later (jobs declared retry-safe) or ends `failed` saying
it was interrupted.

What an administrator asks of a node (store/controls.py) reaches it through its row in the
store, which the node beats every NODE_SECONDS: another max-running (it claims up to that from
then on; threads over it run on), or a drain (it claims nothing more, and once no claim is
under way says so at its next beat: with nothing running, it is empty and may be stopped).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import logging
import os
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from threadsvc.changes import Changes
from threadsvc.errors import FileUnavailable, StoreUnavailable, ThreadsvcError, UnknownJob
from threadsvc.models import Level, Status, Thread, now_ms
from threadsvc.results import ResultFiles
from threadsvc.retry import Backoff
from threadsvc.runner import child
from threadsvc.runner.clock import ClockCheck
from threadsvc.runner.cluster import Cluster
from threadsvc.runner.context import Context, JobCancelled, failure_text
from threadsvc.runner.registry import JobSpec, Registry
from threadsvc.runner.retrying import attempts
from threadsvc.runner.supervisor import SideTask, Supervised, Supervisor
from threadsvc.runner.writer import BatchWriter
from threadsvc.settings import Settings
from threadsvc.store.base import Store
from threadsvc.store.controls import NodeOrders
from threadsvc.uploads import Uploads

if TYPE_CHECKING:  # the server's only: administrative commands do without prometheus_client
    from threadsvc.metrics import Metrics

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0  # claim even without a wake-up this often (another process may add threads)
CANCEL_POLL_SECONDS = 1.0
STOPPING_NOTE_SECONDS = 0.5  # a job still running this long after a stop was asked says so
NODE_SECONDS = 2.0  # a node beats its row this often: orders reach it within that
MOST_RUNNING = 10_000  # the most an administrator may set a node's max-running to


def node_id(settings: Settings) -> str:
    return settings.node or f"{socket.gethostname()}:{os.getpid()}"


class StopReason(enum.Enum):
    USER = "user"
    SHUTDOWN = "shutdown"
    LOST = "lost"  # another node recovered the thread: write nothing more
    TIMEOUT = "timeout"  # the job's `timeout` passed: it ends failed


@dataclass(eq=False)
class Running:
    ctx: Context
    retry_safe: bool
    task: asyncio.Task[None] | None = None
    job_task: asyncio.Task[object] | None = None
    reason: StopReason | None = None
    cancelled_by: str = ""
    done: asyncio.Event = field(default_factory=asyncio.Event)
    timer: asyncio.TimerHandle | None = None  # the job's timeout
    shown: tuple[Thread, Thread] | None = None  # (ctx.thread, it with the latest heartbeat)


class Runner:
    def __init__(
        self,
        store: Store,
        registry: Registry,
        settings: Settings,
        *,
        node: str,
        changes: Changes,
        files: ResultFiles,
        uploads: Uploads,
        supervisor: Supervisor,
        clock: ClockCheck,
        cluster: Cluster | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.settings = settings
        self.node = node
        self.shared_store = store.shared  # other nodes may run threads of this store
        self.changes = changes
        self.files = files
        self.uploads = uploads
        self.cluster = cluster  # where nodes share the store
        self.clock = clock  # checked against the database's at every heartbeat
        self.metrics = metrics  # the server's: threads started and finished here (/metrics)
        self._supervisor = supervisor
        self.writer = BatchWriter(
            store, self.node, on_written=self.changes.publish, on_lost=self._lost
        )
        self._running: dict[str, Running] = {}
        self._ending: set[str] = set()  # of _running: the job is over, its end being stored
        self._wake = asyncio.Event()
        self._stopping = False
        self._side_tasks: list[Supervised] = []
        self._heartbeat: int | None = None  # when this node's threads last had a heartbeat
        self._concurrency = registry.concurrency_limits()  # job -> most running, all nodes
        self.max_running = settings.max_running  # or what an administrator set since
        self.draining = False  # an administrator asked this node to claim nothing more
        self._claiming = False  # a claim is under way (a drain is not done before it ends)
        self._node_started = False

    # -- life -------------------------------------------------------------------------------
    async def start(self) -> None:
        if not self.shared_store:
            # One node owns an embedded store: whatever was left running was interrupted.
            await self._recover(await self.store.running_threads(), "the server stopped")
        side_tasks: list[tuple[str, SideTask]] = [
            ("writer", self.writer.run),
            ("claim", self._claim_loop),
            ("heartbeat", self._heartbeat_loop),
            ("node", self._node_loop),
        ]
        if self.cluster is not None:
            cluster = self.cluster
            side_tasks.append(
                ("listen", lambda: cluster.listen(self.changes, self.wake, self._cancel_heard))
            )
        self._side_tasks = [self._supervisor.spawn(name, run) for name, run in side_tasks]

    async def stop(self) -> None:
        """Stop claiming; give running threads the grace period, then hand them back."""
        self._stopping = True
        self._wake.set()
        running = [r.task for r in self._running.values() if r.task]
        if running:
            await asyncio.wait(running, timeout=self.settings.shutdown_grace)
        for item in list(self._running.values()):
            self._stop(item, StopReason.SHUTDOWN, "")
        remaining = [r.task for r in self._running.values() if r.task]
        if remaining:
            await asyncio.wait(remaining, timeout=5.0)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.flush(), timeout=10.0)
        for side_task in self._side_tasks:
            await side_task.stop()

    def thread_added(self) -> None:
        """A thread was stored: claim it here now, and tell the other nodes."""
        self.wake()
        if self.cluster is not None:
            self.cluster.thread_added()

    def wake(self) -> None:
        """A thread was added or a slot freed: claim now rather than at the next poll."""
        self._wake.set()

    @property
    def running_count(self) -> int:
        return len(self._running)

    def current(self, thread_id: str) -> Thread | None:
        """The thread as this node runs it: its store row plus what the batch writer has not
        written yet. None when it does not run here, or is ending (its final state is read
        from the store, once stored) or being handed back."""
        item = self._running.get(thread_id)
        if item is None or item.reason is not None:
            return None
        thread = item.ctx.thread
        if thread.final:
            return None
        if self._heartbeat is None or self._heartbeat <= (thread.heartbeat or 0):
            return thread
        shown = item.shown  # the copy with the node's heartbeat made for the last read
        if shown is None or shown[0] is not thread or shown[1].heartbeat != self._heartbeat:
            shown = item.shown = (thread, dataclasses.replace(thread, heartbeat=self._heartbeat))
        return shown[1]

    # -- claiming ---------------------------------------------------------------------------
    async def _claim_loop(self) -> None:
        while not self._stopping:
            free = self.max_running - (len(self._running) - len(self._ending))
            if free > 0 and not self.draining:
                self._claiming = True
                try:
                    claimed = await self.store.claim_threads(
                        self.node, free, now_ms(), slots=self.max_running,
                        share=self.settings.max_running_share, concurrency=self._concurrency,
                    )
                except ThreadsvcError as exc:
                    log.warning("cannot claim threads: %s", exc)
                    claimed = []
                finally:
                    self._claiming = False
                # Register every claimed thread before the next await, so that a cancel
                # arriving meanwhile finds it here.
                items = [self._register(thread) for thread in claimed]
                for item in items:
                    await self._launch(item)
                if len(claimed) == free:
                    continue  # there may be more waiting; claim again once a slot is free
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL_SECONDS)
            self._wake.clear()

    def _register(self, thread: Thread) -> Running:
        ctx = Context(thread, self.writer, 0, self.files, self.uploads, self.settings.result_ttl)
        try:
            retry_safe = self.registry.get(thread.job).retry_safe
        except UnknownJob:
            retry_safe = False
        item = Running(ctx, retry_safe=retry_safe)
        self._running[thread.id] = item
        return item

    async def _launch(self, item: Running) -> None:
        ctx = item.ctx
        thread = ctx.thread
        next_seq = await self._last_log_seq(thread.id) + 1
        ctx._started(next_seq, f"Status: inprogress (node {self.node})")
        if self.metrics is not None:
            self.metrics.thread_started(thread)
        try:
            spec = self.registry.get(thread.job)
        except UnknownJob:
            message = f"No job named '{thread.job}' on this node"
            item.task = asyncio.create_task(
                self._end(item, Status.FAILED, message), name=f"thread-{thread.id}"
            )
            return
        if item.reason is not None:  # stopped before it could start
            item.job_task = asyncio.create_task(asyncio.sleep(0), name=f"job-{thread.id}")
            item.job_task.cancel()
        else:
            item.job_task = asyncio.create_task(self._run_job(spec, ctx), name=f"job-{thread.id}")
            if spec.timeout is not None:
                item.timer = asyncio.get_running_loop().call_later(
                    spec.timeout, self._time_out, item, spec.timeout
                )
        item.task = asyncio.create_task(self._supervise(item), name=f"thread-{thread.id}")

    async def _run_job(self, spec: JobSpec, ctx: Context) -> object:
        """The job (its attempts, runner/retrying.py), with its uploads readable from this
        node's disk while it runs (fetched from a storage without local copies; a storage that
        cannot be reached fails the thread); a `process` job in a child process, which a
        cancel kills before this returns."""
        fn = spec.fn
        if spec.process:
            files = child.file_params(spec.params)

            async def fn(ctx: Context) -> None:
                await child.run_in_child(spec.fn, ctx, files, self.files.scratch)

        async with self.uploads.fetched(ctx.thread_id, ctx.params):
            return await attempts(fn, ctx, spec.retry)

    async def _last_log_seq(self, thread_id: str) -> int:
        """Retried while the store is unavailable: the thread is claimed and registered here,
        and the claim loop must not die with it (it is cancelled at shutdown)."""
        backoff = Backoff()
        while True:
            try:
                return await self.store.last_log_seq(thread_id)
            except StoreUnavailable as exc:
                log.warning("cannot read the log of thread %s, retrying: %s", thread_id, exc)
                await backoff.wait()

    # -- running ----------------------------------------------------------------------------
    async def _supervise(self, item: Running) -> None:
        job_task = item.job_task
        assert job_task is not None
        await asyncio.wait([job_task])
        if item.timer is not None:
            item.timer.cancel()
        ctx = item.ctx
        if item.reason is StopReason.LOST:
            await self._forget(item)
            return
        if item.reason is StopReason.SHUTDOWN:
            await self._hand_back(item)
            return
        if item.reason is StopReason.USER:
            by = f" by {item.cancelled_by}" if item.cancelled_by else ""
            await self._end(item, Status.CANCELLED, f"Cancelled{by}")
            return
        if item.reason is StopReason.TIMEOUT:
            await self._end(item, Status.FAILED, item.cancelled_by)
            return
        if job_task.cancelled():
            await self._end(item, Status.FAILED, "The job was cancelled")
            return
        exc = job_task.exception()
        if isinstance(exc, JobCancelled):
            await self._end(item, Status.FAILED, "The job stopped: cancelled")
        elif exc is not None:
            log.error("thread %s (%s) raised", ctx.thread_id, ctx.thread.job, exc_info=exc)
            text = failure_text(exc, self.registry.get(ctx.thread.job).fn.__module__)
            await ctx.log(text, Level.ERROR)
            await self._end(item, Status.FAILED, text)
        elif ctx.thread.errors:
            errors = ctx.thread.errors
            noun = "error" if errors == 1 else "errors"
            await self._end(item, Status.FAILED, None, log_text=f"{errors} {noun} reported")
        else:
            await self._end(item, Status.COMPLETED, None)

    async def _end(
        self,
        item: Running,
        status: Status,
        message: str | None,
        *,
        log_text: str | None = None,
    ) -> None:
        """Write the final status after every event of the thread; shielded from cancellation."""

        async def write() -> None:
            detail = log_text or message
            text = f"Status: {status.value}" + (f": {detail}" if detail else "")
            item.ctx._finish(status, message, Level.INFO, text)
            # The job is over: its slot is free while the final state is being stored, so
            # that the next claim can share that write's transaction rather than follow it.
            self._ending.add(item.ctx.thread_id)
            self._wake.set()
            try:
                await self.writer.flush()
            finally:
                self._ending.discard(item.ctx.thread_id)
            if self.metrics is not None:
                self.metrics.thread_finished(item.ctx.thread)

        try:
            await asyncio.shield(write())
        finally:
            await self._forget(item)
            try:  # inputs are not needed any more (the purge removes what a failure leaves)
                await self.uploads.discard(item.ctx.thread_id, item.ctx.params)
            except FileUnavailable as exc:
                log.warning("could not delete the uploads of thread %s: %s", item.ctx.thread_id, exc)

    async def _hand_back(self, item: Running) -> None:
        """Shutdown: flush what the job wrote, then requeue or fail it through the store."""
        await self.writer.flush()
        thread = item.ctx.thread
        if item.retry_safe:
            message = "The server shut down; the thread will run again"
        else:
            message = "Interrupted: the server shut down while the thread was running"
        try:
            level = Level.WARN if item.retry_safe else Level.ERROR
            handed = await self.store.recover_thread(
                thread, item.retry_safe, message, now_ms(), level
            )
            if handed is not None:
                self.changes.publish([handed])
        except ThreadsvcError as exc:
            log.warning("could not hand back thread %s: %s", thread.id, exc)
        await self._forget(item)

    async def _forget(self, item: Running) -> None:
        self._running.pop(item.ctx.thread_id, None)
        self._ending.discard(item.ctx.thread_id)
        item.done.set()
        self._wake.set()

    # -- cancelling -------------------------------------------------------------------------
    def _stop(self, item: Running, reason: StopReason, by: str) -> None:
        """Ask the job's code to stop; the thread ends once it has (`_supervise`)."""
        if item.reason is None:
            item.reason = reason
            item.cancelled_by = by
            note = {
                StopReason.USER: f"Cancelling{f' (asked by {by})' if by else ''}",
                StopReason.TIMEOUT: f"{by}; stopping",
            }.get(reason)
            if note is not None:  # most jobs stop at once: no change to show for them
                asyncio.get_running_loop().call_later(
                    STOPPING_NOTE_SECONDS, self._note_stopping, item, note
                )
        item.ctx._request_cancel(abandon=reason is StopReason.SHUTDOWN)
        if item.job_task is not None:
            item.job_task.cancel()

    def _note_stopping(self, item: Running, note: str) -> None:
        thread_id = item.ctx.thread_id
        if self._running.get(thread_id) is item and thread_id not in self._ending:
            item.ctx._stopping(note)

    def _time_out(self, item: Running, seconds: float) -> None:
        if not (item.job_task is None or item.job_task.done()):
            self._stop(item, StopReason.TIMEOUT, f"Timed out after {seconds:g} s")

    async def cancel(self, thread_id: str, by: str, wait: float = 1.0) -> bool:
        """Cancel a thread if this node runs it, waiting up to `wait` s for it to end;
        otherwise ask the other nodes to (False)."""
        item = self._running.get(thread_id)
        if item is None:
            if self.cluster is not None:
                self.cluster.cancel_elsewhere(thread_id, by)
            return False
        self._stop(item, StopReason.USER, by)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(item.done.wait(), wait)
        return True

    async def _cancel_heard(self, thread_id: str, by: str) -> bool:
        item = self._running.get(thread_id)
        if item is not None and item.reason is None:
            self._stop(item, StopReason.USER, by)
        return item is not None

    def _lost(self, ids: set[str]) -> None:
        for thread_id in ids:
            item = self._running.get(thread_id)
            if item is not None:
                log.warning("thread %s is no longer this node's; stopping it", thread_id)
                self._stop(item, StopReason.LOST, "")

    # -- heartbeat and recovery -------------------------------------------------------------
    async def _heartbeat_loop(self) -> None:
        """Heartbeat every lease-timeout/3; every second, pick up cancels asked through the
        store (another node, or a request that raced the claim)."""
        interval = max(0.2, min(self.settings.lease_timeout / 3, 10.0))
        next_beat = 0.0
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(CANCEL_POLL_SECONDS)
            try:
                if self._running:
                    for thread_id in await self.store.cancel_requests(self.node):
                        item = self._running.get(thread_id)
                        if item is not None and item.reason is None:
                            self._stop(item, StopReason.USER, "")
                if loop.time() < next_beat:
                    continue
                next_beat = loop.time() + interval
                if self.shared_store:
                    await self.clock.check()  # before judging other nodes' heartbeats
                beat = now_ms()
                await self.store.heartbeat(self.node, beat)
                self._heartbeat = beat
                if self.shared_store:
                    stale = now_ms() - self.settings.lease_timeout * 1000
                    orphans = [
                        t for t in await self.store.running_threads()
                        if t.node != self.node and (t.heartbeat or 0) < stale
                    ]
                    await self._recover(orphans, "its node was lost")
            except ThreadsvcError as exc:
                log.warning("heartbeat failed: %s", exc)

    async def _node_loop(self) -> None:
        """Beat this node's row every NODE_SECONDS with what it runs and may run, and obey
        what the beat reads back. The first beat of the process starts the row afresh."""
        while True:
            try:
                if not self._node_started:
                    await self.store.node_started(self.node, now_ms(), self.settings.max_running)
                    self._node_started = True
                orders = await self.store.node_beat(
                    self.node, now_ms(), running=len(self._running), capacity=self.max_running,
                    drained=self.draining and not self._claiming,
                )
                self._obey(orders)
            except ThreadsvcError as exc:
                log.warning("node beat failed: %s", exc)
            await asyncio.sleep(NODE_SECONDS)

    def _obey(self, orders: NodeOrders) -> None:
        most = min(orders.max_running or self.settings.max_running, MOST_RUNNING)
        if most != self.max_running:
            log.info("max-running is now %d (was %d)", most, self.max_running)
            self.max_running = most
            self._wake.set()  # more room: claim now
        if orders.draining != self.draining:
            log.info("draining: %s", "claiming nothing more" if orders.draining else "ended")
            self.draining = orders.draining
            self._wake.set()

    async def _recover(self, threads: list[Thread], why: str) -> None:
        for thread in threads:
            try:
                retry = self.registry.get(thread.job).retry_safe
            except UnknownJob:
                retry = False
            if retry:
                message, level = f"Interrupted ({why}); the thread will run again", Level.WARN
            else:
                message, level = f"Interrupted: {why} while the thread was running", Level.ERROR
            recovered = await self.store.recover_thread(thread, retry, message, now_ms(), level)
            if recovered is not None:
                log.info("recovered thread %s: %s", thread.id, recovered.status.value)
                if recovered.final and self.metrics is not None:
                    self.metrics.thread_finished(recovered)
                if recovered.final:
                    with contextlib.suppress(FileUnavailable):  # else the purge removes them
                        await self.uploads.discard(thread.id, thread.params)
                self.changes.publish([recovered])
        if threads:
            self._wake.set()
