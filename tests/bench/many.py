"""4. Many threads: N ticker threads running at once (each sleeps a second and reports progress),
polled at a fixed rate; the server's peak RSS and the polls' p99 latency. Then a long queue of
waiting threads on a server of few slots (tests/bench/queued.py)."""

from __future__ import annotations

import asyncio
import json
import resource
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from tests.bench.common import (
    ROOT,
    USER,
    Figure,
    Results,
    Stores,
    bench_server,
    epoch,
    get_thread,
    group_path,
    memory,
    python_env,
    say,
)
from tests.bench.sizes import Sizes

ITEM = "4 many threads"
MB = 1024 * 1024


async def start_many(url: str, token: str, n: int, concurrency: int, job: str = "ticker",
                     seconds: int = 86_400) -> list[str]:
    ids: list[str] = []
    retries: list[int] = []
    run_id = secrets.token_hex(4)
    todo = iter(range(n))
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits,
                                 timeout=120) as client:

        async def starter() -> None:
            for i in todo:
                # A start whose connection broke is sent again under the same key: the
                # server answers the thread it made, if it made one, and starts nothing new.
                key = {"Idempotency-Key": f"bench-many-{run_id}-{i}"}
                for attempt in range(5):
                    try:
                        response = await client.post(
                            group_path(), data={"job": job, "seconds": str(seconds)},
                            headers=key,
                        )
                        break
                    except httpx.TransportError:
                        if attempt == 4:
                            raise
                        retries.append(i)
                if response.status_code != 202:
                    raise RuntimeError(f"start: {response.status_code} {response.text[:200]}")
                ids.append(response.json()["thread"]["id"])

        await asyncio.gather(*(starter() for _ in range(concurrency)))
    if retries:
        say(f"  {len(retries)} starts sent again after a broken connection")
    return ids


def running(url: str, admin_token: str) -> int:
    """Threads the node runs, from /metrics (an administrator's)."""
    headers = {"Authorization": f"Bearer {admin_token}"}
    text = httpx.get(f"{url}/metrics", headers=headers, timeout=30).text
    line = next(x for x in text.splitlines() if x.startswith("threadsvc_running_threads{"))
    return int(float(line.rsplit(" ", 1)[1]))  # prometheus_client writes 3.0


def run(results: Results, stores: Stores, store: str, sizes: Sizes, work: Path) -> None:
    from tests.bench import queued

    running_many(results, stores, store, sizes, work)
    queued.run(results, stores, store, sizes, work)


def running_many(results: Results, stores: Stores, store: str, sizes: Sizes, work: Path) -> None:
    directory = work / f"many-{store}"
    n = sizes.many_threads
    # The server keeps 8 open files for each running slot (a command's pipes and files): under
    # an open-file limit lower than that leaves room for, it serves 12 connections at most.
    files = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    connections = 32 if files >= 8 * n + 2_000 else 8
    if connections < 32:
        say(f"  open-file limit {files}: {connections} connections (the server serves few)")
    with bench_server(directory, stores.url(store, directory),
                      **{"max-running": n}) as (server, tokens):
        pid = server.pid
        samples: list[tuple[float, int]] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                try:
                    samples.append((time.monotonic(), memory(pid)["VmRSS"]))
                except (OSError, KeyError):
                    return
                stop.wait(0.5)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        rss_idle = memory(pid)["VmRSS"]
        t0 = time.monotonic()
        ids = asyncio.run(start_many(server.url, tokens[USER], n, connections))
        started = time.monotonic() - t0
        while running(server.url, tokens["admin"]) < n:
            if time.monotonic() - t0 > started + 300:
                raise TimeoutError(f"only {running(server.url, tokens['admin'])} of {n} threads running")
            time.sleep(0.2)
        say(f"  {n:,} tickers started in {started:.1f} s ({n / started:,.0f}/s), all running "
            f"after {time.monotonic() - t0:.1f} s; RSS {memory(pid)['VmRSS'] / MB:.0f} MB")
        time.sleep(3)  # every thread ticking
        spec = {"host": "127.0.0.1", "port": server.port, "token": tokens[USER],
                "paths": [group_path(i, "/progress") for i in ids],
                "rate": sizes.many_polls_per_second, "seconds": sizes.many_poll_seconds,
                "connections": connections}
        spec_file = directory / "poller.json"
        spec_file.write_text(json.dumps(spec))
        out = run_poller(spec_file, sizes.many_poll_seconds)
        lag = tick_lag(server.url, tokens[USER], ids[:: max(1, n // 50)])
        stop.set()
        sampler.join()
        peak = memory(pid)["VmHWM"]
        steady = max(rss for _, rss in samples[-10:]) if samples else 0
    say(f"  polls: {out['polls']:,} at {out['rate']:.0f}/s, p50 {out['p50_ms']:.1f} ms, "
        f"p99 {out['p99_ms']:.1f} ms, max {out['max_ms']:.0f} ms, statuses {out['statuses']}, "
        f"errors {out['errors']}; tick lag {lag}")
    bad = sum(v for k, v in out["statuses"].items() if k != "200") + out["errors"]
    results.add(Figure(ITEM, f"peak RSS, {n:,} threads running", store, peak / MB, "MB",
                       target=200.0, higher_is_better=False,
                       note=f"{(steady - rss_idle) / n / 1024:.1f} KiB per thread over the idle "
                            f"server's {rss_idle / MB:.0f} MB"))
    results.add(Figure(ITEM, f"p99 poll latency at {sizes.many_polls_per_second}/s", store,
                       out["p99_ms"], "ms", target=100.0, higher_is_better=False,
                       note=f"p50 {out['p50_ms']:.1f} ms, max {out['max_ms']:.0f} ms, "
                            f"{out['polls']:,} polls over {sizes.many_poll_seconds:g} s"
                            + (f"; {bad} not 200" if bad else "")))
    results.add(Figure(ITEM, "stored progress behind schedule (median of 50 threads)", store,
                       lag["median"], "s", higher_is_better=False,
                       note=f"worst {lag['max']:.1f} s; starting {n:,} over HTTP took "
                            f"{started:.1f} s"))


def run_poller(spec_file: Path, seconds: float) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-m", "tests.bench.poller", str(spec_file)],
                          capture_output=True, text=True, timeout=seconds + 300, env=python_env(),
                          cwd=ROOT, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        raise RuntimeError(f"poller failed: {done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def tick_lag(url: str, token: str, ids: list[str]) -> dict[str, float]:
    """How far each thread's stored progress is behind its schedule (step N due N seconds after
    it started): under 1 s when the server keeps up."""
    lags = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"},
                      timeout=60) as client:
        for thread_id in ids:
            thread = get_thread(client, thread_id)
            expected = time.time() - epoch(thread["started"])
            current = int((thread.get("progress") or {}).get("current", 0))
            lags.append(max(0.0, expected - current))
    lags.sort()
    return {"median": lags[len(lags) // 2], "max": lags[-1]}
