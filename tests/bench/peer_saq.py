"""SAQ doing the no-op workload: run with the peers' Python (tests/bench/.venv-peers), never
threadsvc's. Enqueues N jobs from C concurrent tasks while a worker in this process runs them
C at a time; prints one JSON line with the time from the first enqueue to the last job done.

    .venv-peers/bin/python tests/bench/peer_saq.py QUEUE_URL N C   # redis://... or postgresql://...
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from saq import Queue, Worker


async def noop(ctx: dict) -> None:
    return None


async def main(url: str, n: int, concurrency: int) -> dict:
    queue = Queue.from_url(url)
    await queue.connect()
    done = 0
    all_done = asyncio.Event()

    async def after(ctx: dict) -> None:
        nonlocal done
        done += 1
        if done >= n:
            all_done.set()

    worker = Worker(queue, functions=[noop], concurrency=concurrency, after_process=after)
    task = asyncio.create_task(worker.start())
    await asyncio.sleep(0.5)  # the worker is waiting for jobs
    todo = iter(range(n))

    async def enqueuer() -> None:
        for _ in todo:
            await queue.enqueue("noop")

    t0 = time.perf_counter()
    await asyncio.gather(*(enqueuer() for _ in range(concurrency)))
    enqueued = time.perf_counter() - t0
    await asyncio.wait_for(all_done.wait(), 1800)
    total = time.perf_counter() - t0
    incomplete = await queue.count("incomplete")
    await worker.stop()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await queue.disconnect()
    return {"jobs": n, "seconds": total, "rate": n / total, "enqueue_rate": n / enqueued,
            "incomplete": incomplete}


if __name__ == "__main__":
    url, n, c = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    print(json.dumps(asyncio.run(main(url, n, c))))
