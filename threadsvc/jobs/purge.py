"""`purge`: deletes results past their deletion moment, threads past `thread-ttl`, and files
that no thread keeps any more (orphans).

It needs the store itself, so it is made for a store rather than declared once; the app
schedules it (Service.start_purge) as a server-level thread owned by `system`.

Orphans are what a failure left in the file storage: a result or uploads whose thread was
deleted while the storage could not be reached, a result the store forgot, uploads of a node
killed before its start was stored. A result key is an orphan when its thread is gone or has
ended without keeping it (a running thread's result is being put: kept). Uploads whose thread
does not exist may belong to a start still storing them, so they are deleted only once this
node has seen them so for `orphan_grace` ms.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from threadsvc.files.base import FileStorage, uploads_prefix
from threadsvc.models import Role, Scope, Thread, now_ms
from threadsvc.results import ResultFiles
from threadsvc.runner.context import Context
from threadsvc.runner.registry import JobSpec, job
from threadsvc.settings import Settings
from threadsvc.store.base import Store
from threadsvc.uploads import Uploads

BATCH = 500
ORPHAN_GRACE = 3600 * 1000  # ms; a start stores its uploads in far less


def purge_job(
    store: Store, files: ResultFiles, uploads: Uploads, settings: Settings,
    orphan_grace: int = ORPHAN_GRACE,
) -> JobSpec:
    unowned: dict[str, int] = {}  # thread ids with uploads but no thread -> first seen (ms)

    @job("purge", scope=Scope.SERVER, role=Role.APPROVER, title="Purge thread")
    async def purge(ctx: Context) -> None:
        """Delete expired results, then threads (with their logs) past thread-ttl, then files
        no thread keeps."""
        now = now_ms()
        results = 0
        while batch := await store.expired_results(now, BATCH):
            for thread in batch:
                await files.delete(thread.result)
                await store.forget_result_file(thread.id)
                results += 1
            await ctx.progress(results)
        threads = 0
        cutoff = now - settings.thread_ttl * 1000
        while batch := await store.ended_before(cutoff, BATCH):
            deleted = 0
            for thread in batch:
                if await store.delete_thread(thread.id):
                    await files.delete(thread.result)
                    await uploads.discard(thread.id, thread.params)
                    deleted += 1
            threads += deleted
            await ctx.progress(results + threads)
            if not deleted:
                break
        orphans = await remove_orphans(store, files.storage, unowned, orphan_grace)
        await ctx.message(
            f"Deleted {results} results and {threads} threads"
            + (f", and {orphans} files no thread kept" if orphans else "")
        )

    return purge


async def remove_orphans(
    store: Store, storage: FileStorage, unowned: dict[str, int], grace: int
) -> int:
    """Delete every result and upload that no thread keeps; returns how many keys (a thread's
    uploads counting as one). `unowned` is updated: uploads without a thread, when first seen."""
    removed = 0
    async for keys in _batches(storage.keys("results/")):
        ids = {key: key.split("/")[1] for key in keys}
        found = await _threads(store, set(ids.values()))
        for key, thread_id in ids.items():
            if not _keeps_result(found.get(thread_id)):
                await storage.delete(key)
                removed += 1
    now = now_ms()
    still: dict[str, int] = {}
    async for keys in _batches(storage.keys("uploads/")):
        owners = {key.split("/")[1] for key in keys}
        found = await _threads(store, owners)
        for thread_id in owners:
            thread = found.get(thread_id)
            if thread is None:
                first = unowned.get(thread_id, now)
                if now - first < grace:
                    still[thread_id] = first
                    continue
            elif not thread.final:
                continue  # its job may read them
            await storage.delete_prefix(uploads_prefix(thread_id))
            removed += 1
    unowned.clear()
    unowned.update(still)
    return removed


def _keeps_result(thread: Thread | None) -> bool:
    if thread is None:
        return False
    if not thread.final:
        return True  # running (putting its result) or to run again
    return thread.result is not None and thread.result.file is not None


async def _threads(store: Store, ids: set[str]) -> dict[str, Thread]:
    return {thread.id: thread for thread in await store.threads_by_ids(sorted(ids))}


async def _batches(keys: AsyncIterator[str]) -> AsyncIterator[list[str]]:
    batch: list[str] = []
    async for key in keys:
        batch.append(key)
        if len(batch) >= BATCH:
            yield batch
            batch = []
    if batch:
        yield batch
