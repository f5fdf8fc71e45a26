"""Progress polls at a fixed rate (open loop), over a pool of keep-alive connections; each poll's
latency counts from the moment it was due, so a stalled server shows. Prints one JSON line.

    python -m tests.bench.poller SPEC.json   # {"host", "port", "token", "paths": [...],
                                             #  "rate": R, "seconds": S, "connections": C}
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from typing import Any

from tests.bench.common import latency_stats


async def read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return status


async def main(spec: dict[str, Any]) -> dict[str, Any]:
    host, port, rate, seconds = spec["host"], spec["port"], spec["rate"], spec["seconds"]
    paths = spec["paths"]
    auth = f"Authorization: Bearer {spec['token']}\r\n"
    queue: asyncio.Queue[float | None] = asyncio.Queue()
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors: list[str] = []

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while (due := await queue.get()) is not None:
                path = random.choice(paths)
                request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{auth}\r\n".encode()
                try:
                    writer.write(request)
                    await writer.drain()
                    status = await read_response(reader)
                except (OSError, asyncio.IncompleteReadError) as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
                    continue
                latencies.append(time.perf_counter() - due)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            writer.close()

    workers = [asyncio.create_task(worker()) for _ in range(spec["connections"])]
    await asyncio.sleep(0.2)  # connected
    t0 = time.perf_counter()
    total = int(rate * seconds)
    for i in range(total):
        due = t0 + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait(due)
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.wait_for(asyncio.gather(*workers), 120)
    elapsed = time.perf_counter() - t0
    stats = latency_stats(latencies)
    return {
        "polls": len(latencies), "rate": len(latencies) / elapsed, "statuses": statuses,
        "errors": len(errors), "first_error": errors[0] if errors else "",
        "p50_ms": stats["p50"], "p95_ms": stats["p95"], "p99_ms": stats["p99"],
        "max_ms": stats["max"],
    }


if __name__ == "__main__":
    with open(sys.argv[1]) as fh:
        print(json.dumps(asyncio.run(main(json.load(fh)))))
