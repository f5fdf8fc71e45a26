"""procrastinate doing the no-op workload: run with the peers' Python (tests/bench/.venv-peers),
never threadsvc's. Applies its schema to an empty database, enqueues (defers) N jobs from C
concurrent tasks while a worker in this process runs them C at a time; prints one JSON line
with the time from the first defer to the last job succeeded.

    .venv-peers/bin/python tests/bench/peer_procrastinate.py DSN N C
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time

import procrastinate

POOL_SIZE = 10  # as threadsvc's PostgreSQL store


async def main(dsn: str, n: int, concurrency: int) -> dict:
    app = procrastinate.App(
        connector=procrastinate.PsycopgConnector(conninfo=dsn, min_size=1, max_size=POOL_SIZE)
    )

    @app.task(name="noop")
    async def noop() -> None:
        return None

    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        worker = asyncio.create_task(app.run_worker_async(
            concurrency=concurrency, install_signal_handlers=False, wait=True,
            fetch_job_polling_interval=1.0,
        ))
        await asyncio.sleep(0.5)  # the worker is listening
        todo = iter(range(n))

        async def deferrer() -> None:
            for _ in todo:
                await noop.defer_async()

        t0 = time.perf_counter()
        await asyncio.gather(*(deferrer() for _ in range(concurrency)))
        deferred = time.perf_counter() - t0
        query = "SELECT count(*) AS n FROM procrastinate_jobs WHERE status = 'succeeded'"
        while True:
            row = await app.connector.execute_query_one_async(query)
            if row["n"] >= n:
                break
            if time.perf_counter() - t0 > 1800:
                raise TimeoutError(f"{row['n']} of {n} done")
            await asyncio.sleep(0.01)
        total = time.perf_counter() - t0
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await worker
    return {"jobs": n, "seconds": total, "rate": n / total, "enqueue_rate": n / deferred}


if __name__ == "__main__":
    dsn, n, c = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    print(json.dumps(asyncio.run(main(dsn, n, c))))
