"""No-op threads through the Python API, in this process: Service, Runner and store wired as
`create_app` wires them, no HTTP. Prints one JSON line.

    python -m tests.bench.inproc DB_URL DATA_DIR THREADS CONCURRENCY MAX_RUNNING
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from threadsvc.changes import Changes
from threadsvc.files import make_files
from threadsvc.files.scratch import Scratch
from threadsvc.models import Principal, Status, User
from threadsvc.results import ResultFiles, ResultLinks
from threadsvc.runner.clock import ClockCheck
from threadsvc.runner.registry import Registry
from threadsvc.runner.runner import Runner, node_id
from threadsvc.runner.supervisor import Supervisor
from threadsvc.service import Service
from threadsvc.settings import Settings
from threadsvc.store import make_store
from threadsvc.uploads import Uploads

ADMIN = Principal(User(1, "bench", True))


async def main(db: str, data_dir: str, threads: int, concurrency: int, max_running: int) -> dict[str, float]:
    settings = Settings(
        db=db, data_dir=data_dir, max_running=max_running, max_active_per_user=10**9,
        max_active_per_group=10**9, shutdown_grace=1.0, secret_key=("bench",),
        jobs=("tests.bench.jobs",),
    )
    store = make_store(settings)
    await store.open()
    registry = Registry.load(settings.jobs)
    changes = Changes()
    storage = make_files(settings)
    await storage.open()
    scratch = Scratch(settings.data_dir)
    scratch.open()
    files = ResultFiles(storage, scratch)
    uploads = Uploads(storage, scratch, settings.max_upload_file)
    runner = Runner(
        store, registry, settings, node=node_id(settings), changes=changes, files=files,
        uploads=uploads, supervisor=Supervisor(), clock=ClockCheck(store),
    )
    service = Service(
        store, registry, runner, settings, ResultLinks(settings.secret_key, 300), files=files,
        uploads=uploads, changes=changes,
    )
    await runner.start()
    try:
        todo = iter(range(threads))

        async def starter() -> None:
            for _ in todo:
                await service.start(ADMIN, None, "noop", [])

        t0 = time.perf_counter()
        await asyncio.gather(*(starter() for _ in range(concurrency)))
        started = time.perf_counter() - t0
        while True:
            counts = await store.count_by_status()
            done = counts.get(Status.COMPLETED, 0)
            if done >= threads:
                break
            if sum(counts.get(s, 0) for s in (Status.FAILED, Status.CANCELLED)):
                raise RuntimeError(f"threads did not complete: {counts}")
            await asyncio.sleep(0.01)
        total = time.perf_counter() - t0
    finally:
        await runner.stop()
        scratch.close()
        await storage.close()
        await store.close()
    return {"threads": threads, "seconds": total, "rate": threads / total,
            "start_seconds": started, "start_rate": threads / started}


if __name__ == "__main__":
    db, data_dir, n, c, m = sys.argv[1:6]
    print(json.dumps(asyncio.run(main(db, data_dir, int(n), int(c), int(m)))))
