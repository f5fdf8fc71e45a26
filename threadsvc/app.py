"""create_app(settings): everything is wired here; the lifespan opens the store and runs the runner."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator

import anyio.to_thread
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware

from threadsvc.changes import Changes
from threadsvc.delivery.service import WebhookService
from threadsvc.delivery.worker import DeliveryWorker
from threadsvc.errors import ThreadsvcError
from threadsvc.files import make_files
from threadsvc.files.base import FileStorage
from threadsvc.files.migrate import check_recorded
from threadsvc.files.scratch import Scratch
from threadsvc.files.shared import check_shared
from threadsvc.identity import Identity
from threadsvc.jobs.command.job import command_job
from threadsvc.jobs.command.process import kill_all
from threadsvc.jobs.purge import purge_job
from threadsvc.keys import check_key_fingerprint, secret_keys
from threadsvc.metrics import Metrics
from threadsvc.results import ResultFiles, ResultLinks
from threadsvc.runner.clock import ClockCheck
from threadsvc.runner.cluster import Cluster
from threadsvc.runner.registry import Registry
from threadsvc.runner.runner import Runner, node_id
from threadsvc.runner.schedules import Scheduler, parse_schedules
from threadsvc.runner.supervisor import Supervisor
from threadsvc.service import Service
from threadsvc.settings import Settings
from threadsvc.state import AppState, state_of
from threadsvc.store import make_store
from threadsvc.store.base import Store
from threadsvc.uploads import Uploads
from threadsvc.web import errors, openapi
from threadsvc.web.access import AccessLog
from threadsvc.web.console import Console, ConsoleSessions
from threadsvc.web.middleware import ApiAlias, BodyLimit
from threadsvc.web.renderings import Renderings
from threadsvc.web.routes import console_routes, routes
from threadsvc.web.waiting import Rechecks, StreamQuota

log = logging.getLogger("threadsvc")
FULL_COLLECTION_EVERY = 100  # collections of the middle generation per full one (CPython: 10)


def create_app(settings: Settings) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        registry = Registry.load(settings.jobs)
        store = make_store(settings)
        await store.open()
        metrics = Metrics(store)  # this node's figures (/metrics), counted by each part
        stack = contextlib.AsyncExitStack()
        try:
            keys = await secret_keys(settings, store)
            await check_key_fingerprint(store, keys)
            await check_recorded(store, settings.files_kind)
            supervisor = Supervisor()
            clock = ClockCheck(store)
            if store.shared:
                await clock.check()  # every time this node writes is on the database's clock
            node = node_id(settings)
            cluster = Cluster(store, node) if store.shared else None  # nodes hear one another
            changes = Changes(announce=cluster.changed if cluster is not None else None)
            storage, scratch = await stack.enter_async_context(opened_files(settings, store))
            files = ResultFiles(storage, scratch)
            uploads = Uploads(storage, scratch, settings.max_upload_file)
            runner = Runner(
                store, registry, settings, node=node, changes=changes, files=files,
                uploads=uploads, supervisor=supervisor, clock=clock, cluster=cluster,
                metrics=metrics,
            )
            registry.add(purge_job(store, files, uploads, settings))
            if settings.commands:
                registry.add(command_job(settings))  # the [commands.NAME] tables (docs/api.md#jobs)
            links = ResultLinks(keys, settings.result_url_ttl)
            service = Service(
                store, registry, runner, settings, links, files=files, uploads=uploads,
                changes=changes,
            )
            identity = Identity(store, settings, keys, metrics=metrics)
            app.state.threadsvc = AppState(
                settings=settings,
                identity=identity,
                service=service,
                webhooks=WebhookService(store, service, settings),
                runner=runner,
                changes=changes,
                supervisor=supervisor,
                clock=clock,
                console=Console(keys),
                streams=StreamQuota(settings.max_streams_per_user),
                renderings=Renderings(),
                rechecks=Rechecks(identity, settings.auth_cache_seconds or 5.0),
                openapi=openapi.generate(registry),  # every job is registered by now
                metrics=metrics,
            )
            deliveries = DeliveryWorker(store, settings, links=links, metrics=metrics)  # webhooks (docs/api.md#webhooks)
            scheduler = Scheduler(parse_schedules(settings.schedules), service, node)
            await scheduler.check()  # a bad [schedules.NAME] table stops the start here
            await runner.start()
            await deliveries.start(supervisor)
            purge = supervisor.spawn("purge-schedule", lambda: schedule_purge(service, settings))
            ticks = supervisor.spawn("schedules", scheduler.run) if scheduler.schedules else None
            settle_garbage_collector()
            log.info("threadsvc node %s serving", node)
            try:
                yield
            finally:
                await deliveries.stop()
                await purge.stop()
                if ticks is not None:
                    await ticks.stop()
                await runner.stop()
                kill_all()  # commands still in their SIGTERM grace: the process ends now
        finally:
            try:
                await stack.aclose()  # the file storage and this process's scratch
            finally:
                await store.close()

    return Starlette(
        routes=[*routes(), *console_routes()],
        middleware=[
            # outermost: the access log, and the headers of every answer (those of the others too)
            Middleware(AccessLog),
            Middleware(ApiAlias),
            Middleware(
                BodyLimit, limit=settings.max_upload, read_timeout=settings.read_timeout,
                large_at_once=settings.max_large_bodies,
            ),
            Middleware(ConsoleSessions),  # the console's cookie (threadsvc.web.auth reads it)
        ],
        exception_handlers={
            ThreadsvcError: errors.threadsvc_error,
            HTTPException: errors.http_error,
            Exception: errors.internal_error,
        },
        lifespan=lifespan,
    )


@contextlib.asynccontextmanager
async def opened_files(
    settings: Settings, store: Store
) -> AsyncIterator[tuple[FileStorage, Scratch]]:
    """The one file storage of this node, open, with this process's scratch directory (what
    killed processes left there is removed first); local files on a shared store are first
    proven to be the directory the other nodes use."""
    storage = make_files(settings)
    await storage.open()
    scratch = Scratch(settings.data_dir)
    try:
        removed = await anyio.to_thread.run_sync(scratch.open)
        if removed:
            log.info("removed the scratch of %d stopped processes", removed)
        if storage.kind == "local" and store.shared:
            await check_shared(storage, store, scratch)
        yield storage, scratch
    finally:
        await anyio.to_thread.run_sync(scratch.close)
        await storage.close()


def stop_waiting(app: Starlette) -> None:
    """The server is stopping: long-polls and event streams answer now. Called from a signal
    handler, which interrupts the loop's own thread anywhere: the close is queued on the loop."""
    state = state_of(app)
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # the loop has not started, or has ended: nobody waits
        return
    if state is not None:
        loop.call_soon_threadsafe(state.changes.close)


def settle_garbage_collector() -> None:
    """Shorter and rarer stop-the-world pauses of the cyclic garbage collector. What start-up
    made lives as long as the process, so full collections stop scanning it; and a full
    collection, which scans every object (about 40 for each running thread), runs after 100
    collections of the middle generation rather than 10: with 10,000 threads running, one took
    0.3-0.4 s and came every few seconds."""
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_EVERY)


async def schedule_purge(service: Service, settings: Settings) -> None:
    """Start a purge thread every `purge-interval` seconds when there is something to delete."""
    while True:
        await asyncio.sleep(settings.purge_interval)
        try:
            await service.start_purge()
        except ThreadsvcError as exc:
            log.warning("could not start the purge: %s", exc)
