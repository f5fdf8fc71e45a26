"""`purge`: deletes results past their deletion moment and threads past `thread-ttl`.

It needs the store itself, so it is made for a store rather than declared once; the app
schedules it (Service.start_purge) as a server-level thread owned by `system`.
"""

from __future__ import annotations

from threadsvc.models import Role, Scope, now_ms
from threadsvc.results import ResultFiles
from threadsvc.runner.context import Context
from threadsvc.runner.registry import JobSpec, job
from threadsvc.settings import Settings
from threadsvc.store.base import Store
from threadsvc.uploads import Uploads

BATCH = 500


def purge_job(store: Store, files: ResultFiles, uploads: Uploads, settings: Settings) -> JobSpec:
    @job("purge", scope=Scope.SERVER, role=Role.APPROVER, title="Purge thread")
    async def purge(ctx: Context) -> None:
        """Delete expired results, then threads (with their logs) past thread-ttl."""
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
                    await uploads.discard(thread.id)
                    deleted += 1
            threads += deleted
            await ctx.progress(results + threads)
            if not deleted:
                break
        await ctx.message(f"Deleted {results} results and {threads} threads")

    return purge
