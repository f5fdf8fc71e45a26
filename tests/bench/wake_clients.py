"""N clients waiting on one thread (long-polls or event streams), woken by one cancel. Raw asyncio
sockets, so that the clients cost little next to the server. Prints one JSON line.

    python -m tests.bench.wake_clients '{"host": ..., "port": ..., "token": ..., "mode":
        "longpoll"|"sse", "n": N, "thread_path": "/ps/service/groups/dev/threads/ID",
        "etag": "W/\\"3\\"", "server_pid": PID}'
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from tests.bench.common import cpu_seconds, latency_stats, raise_open_files


class Client:
    def __init__(self) -> None:
        self.ready = asyncio.Event()
        self.woken_at: float | None = None
        self.early = False
        self.error: str | None = None


async def hold(spec: dict[str, Any], client: Client, connect: asyncio.Semaphore,  # noqa: C901
               go: asyncio.Event) -> None:
    path = spec["thread_path"]
    if spec["mode"] == "longpoll":
        target = f"{path}/progress?wait=60"
        extra = f"If-None-Match: {spec['etag']}\r\n"
    else:
        target = f"{path}/events"
        extra = "Accept: text/event-stream\r\n"
    request = (f"GET {target} HTTP/1.1\r\nHost: {spec['host']}:{spec['port']}\r\n"
               f"Authorization: Bearer {spec['token']}\r\n{extra}\r\n").encode()
    writer = None
    try:
        async with connect:
            reader, writer = await asyncio.open_connection(spec["host"], spec["port"])
            writer.write(request)
            await writer.drain()
        buffer = b""
        if spec["mode"] == "longpoll":
            client.ready.set()  # nothing to wait for: the answer comes with the change
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                where = "the change" if client.ready.is_set() else "it was ready"
                client.error = client.error or (
                    f"connection closed before {where}: {buffer[:200]!r}")
                return
            buffer += chunk
            if spec["mode"] == "sse" and not client.ready.is_set() and b"event: status" in buffer:
                client.ready.set()
                buffer = b""
                continue
            if spec["mode"] == "longpoll" and b"\r\n\r\n" in buffer:
                head, _, body = buffer.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                if len(body) < length:
                    continue
                if not go.is_set():
                    client.early = True
                client.woken_at = time.perf_counter()
                if not head.startswith(b"HTTP/1.1 200") or b'status="cancelled"' not in body:
                    client.error = head.split(b"\r\n")[0].decode(errors="replace")
                return
            if spec["mode"] == "sse" and b'status="cancelled"' in buffer:
                if not go.is_set():
                    client.early = True
                client.woken_at = time.perf_counter()
                return
    except Exception as exc:  # noqa: BLE001 - a client that fails is counted, not fatal
        client.error = f"{type(exc).__name__}: {exc}"
    finally:
        client.ready.set()  # a client that failed is ready, as a failure
        if writer is not None:
            writer.close()


async def main(spec: dict[str, Any]) -> dict[str, Any]:
    raise_open_files()
    n = spec["n"]
    clients = [Client() for _ in range(n)]
    go = asyncio.Event()
    connect = asyncio.Semaphore(256)
    t_connect = time.perf_counter()
    tasks = [asyncio.create_task(hold(spec, c, connect, go)) for c in clients]
    await asyncio.wait_for(asyncio.gather(*(c.ready.wait() for c in clients)), 300)
    connected = time.perf_counter() - t_connect
    # Every long-poll request is sent, every stream has its first status event: wait until the
    # server has taken them all in (its CPU goes quiet).
    pid = spec["server_pid"]
    before = cpu_seconds(pid)
    while True:
        await asyncio.sleep(0.5)
        now = cpu_seconds(pid)
        if now - before < 0.025:
            break
        before = now
    errors_before = sum(1 for c in clients if c.error)
    # One change: cancel the thread.
    reader, writer = await asyncio.open_connection(spec["host"], spec["port"])
    request = (f"POST {spec['thread_path']}/cancel HTTP/1.1\r\nHost: {spec['host']}\r\n"
               f"Authorization: Bearer {spec['token']}\r\nContent-Length: 0\r\n\r\n").encode()
    go.set()
    t0 = time.perf_counter()
    writer.write(request)
    await writer.drain()
    await reader.readuntil(b"\r\n\r\n")
    cancel_answered = time.perf_counter() - t0
    writer.close()
    _, pending = await asyncio.wait(tasks, timeout=30)
    for task in pending:
        task.cancel()
    woken = [c.woken_at - t0 for c in clients if c.woken_at is not None and not c.early]
    errors = [c.error for c in clients if c.error]
    stats = latency_stats(woken)
    return {
        "mode": spec["mode"], "n": n, "woken": len(woken),
        "early": sum(1 for c in clients if c.early), "errors": len(errors),
        "errors_before_change": errors_before, "first_error": errors[0] if errors else "",
        "connect_seconds": connected, "cancel_answered_ms": cancel_answered * 1000,
        "p50_ms": stats["p50"], "p99_ms": stats["p99"], "max_ms": stats["max"],
        "within_1s": sum(1 for w in woken if w <= 1.0),
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(json.loads(sys.argv[1])))))
