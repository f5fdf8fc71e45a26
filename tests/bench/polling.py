"""1. Polling: GET …/progress of a running thread with Bearer auth, against a bare Starlette app
on the same uvicorn settings answering the same bytes; wrk with 64 connections, in turns."""

from __future__ import annotations

from pathlib import Path

from tests.bench.common import (
    USER,
    Figure,
    Results,
    Stores,
    bench_server,
    cpu_seconds,
    group_path,
    say,
    start_bare,
    start_thread,
    stop_process,
    wait_thread,
    wrk,
)
from tests.bench.sizes import Sizes

ITEM = "1 polling"


def run(results: Results, stores: Stores, store: str, sizes: Sizes, work: Path) -> None:
    directory = work / f"polling-{store}"
    with bench_server(directory, stores.url(store, directory)) as (server, tokens):
        auth = {"Authorization": f"Bearer {tokens[USER]}"}
        with server.bearer(tokens[USER]) as client:
            thread = start_thread(client, "hold", seconds=86_400)
            wait_thread(client, thread["id"], lambda t: t.get("progress") is not None)
            path = group_path(thread["id"], "/progress")
            response = client.get(path)
            response.raise_for_status()
        spec = {"body": response.text, "headers": dict(response.headers)}
        bare, bare_url = start_bare(directory, spec)
        try:
            import httpx

            check = httpx.get(bare_url + path, headers=auth)
            same = (check.content == response.content
                    and check.headers["content-type"] == response.headers["content-type"]
                    and check.headers.get("etag") == response.headers.get("etag"))
            if not same:
                raise RuntimeError("the bare app does not answer the same bytes")
            pids = {"threadsvc": server.pid, "bare": bare.pid}
            urls = {"threadsvc": server.url + path, "bare": bare_url + path}
            totals = {name: {"requests": 0, "seconds": 0.0, "cpu": 0.0, "p99": [], "errors": 0}
                      for name in urls}
            for url in urls.values():  # warm-up
                wrk(url, seconds=sizes.warmup, connections=sizes.connections, headers=auth)
            for round_no in range(sizes.poll_rounds):
                for name, url in urls.items():
                    before = cpu_seconds(pids[name])
                    out = wrk(url, seconds=sizes.poll_seconds, connections=sizes.connections,
                              headers=auth)
                    used = cpu_seconds(pids[name]) - before
                    total = totals[name]
                    total["requests"] += out["ok"]
                    total["errors"] += out["requests"] - out["ok"] + out["connect"] + out["read"]
                    total["seconds"] += out["duration_us"] / 1e6
                    total["cpu"] += used
                    total["p99"].append(out["p99_us"] / 1000)
                    say(f"  round {round_no + 1} {name}: {out['rate']:,.0f} req/s, "
                        f"{out['ok'] / max(used, 1e-9):,.0f} req/CPU-s, p99 {out['p99_us']/1000:.1f} ms")
        finally:
            stop_process(bare)
    rate = {n: t["requests"] / t["seconds"] for n, t in totals.items()}
    per_cpu = {n: t["requests"] / max(t["cpu"], 1e-9) for n, t in totals.items()}
    note = f"{sizes.connections} connections, {sizes.poll_rounds}×{sizes.poll_seconds:g} s each, in turns"
    errors = totals["threadsvc"]["errors"]
    results.add(Figure(ITEM, "progress polls/s, threadsvc (Bearer)", store, rate["threadsvc"],
                       "req/s", note=note + (f"; {errors} errors" if errors else "")))
    results.add(Figure(ITEM, "progress polls/s, bare Starlette (same bytes)", store, rate["bare"],
                       "req/s"))
    results.add(Figure(ITEM, "ratio threadsvc / bare", store, rate["threadsvc"] / rate["bare"],
                       "×", target=0.6))
    results.add(Figure(ITEM, "ratio per server CPU-second (less noisy)", store,
                       per_cpu["threadsvc"] / per_cpu["bare"], "×",
                       note=f"{per_cpu['threadsvc']:,.0f} vs {per_cpu['bare']:,.0f} req per CPU-s"))
    results.add(Figure(ITEM, "p99 latency, threadsvc", store,
                       max(totals["threadsvc"]["p99"]), "ms",
                       note=f"bare {max(totals['bare']['p99']):.1f} ms", higher_is_better=False))
