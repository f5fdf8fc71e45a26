"""1. Polling: GET …/progress of a running thread with Bearer auth, against a bare Starlette app
on the same uvicorn stack answering the same bytes; wrk with 64 connections, in turns.

Each stack is measured: `auto` (uvloop and httptools, what an install gets) and `plain`
(asyncio and h11). The limit is the bare app without an access log; the bare app with
uvicorn's access log is the second anchor (threadsvc writes its own access line per request,
as shipped). The targets hold on the fast stack: polls at least 0.6 of the limit, p99 at most
twice the limit's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
STACKS = {"auto": "uvloop + httptools", "plain": "asyncio + h11"}
TARGETS = "auto"  # the stack the targets are for
RATE_TARGET = 0.6
P99_TARGET = 2.0  # × the limit's p99


def run(results: Results, stores: Stores, store: str, sizes: Sizes, work: Path) -> None:
    for stack in STACKS:
        _run_stack(results, stores, store, sizes, work, stack)


def _run_stack(results: Results, stores: Stores, store: str, sizes: Sizes, work: Path,
               stack: str) -> None:
    directory = work / f"polling-{store}-{stack}"
    stack_setting: dict[str, Any] = {"http-stack": stack}
    with bench_server(directory, stores.url(store, directory), **stack_setting) as (
        server, tokens,
    ):
        if f"HTTP stack: {STACKS[stack]}" not in server.log.read_text():
            raise RuntimeError(f"threadsvc is not on {STACKS[stack]}: install uvloop and httptools")
        auth = {"Authorization": f"Bearer {tokens[USER]}"}
        with server.bearer(tokens[USER]) as client:
            thread = start_thread(client, "hold", seconds=86_400)
            wait_thread(client, thread["id"], lambda t: t.get("progress") is not None)
            path = group_path(thread["id"], "/progress")
            response = client.get(path)
            response.raise_for_status()
        spec = {"body": response.text, "headers": dict(response.headers)}
        bare, bare_url = start_bare(directory, spec, stack)
        logged, logged_url = start_bare(directory, spec, stack, access_log=True)
        try:
            _check_same(bare_url + path, response, auth)
            pids = {"threadsvc": server.pid, "bare": bare.pid, "bare+log": logged.pid}
            urls = {"threadsvc": server.url + path, "bare": bare_url + path,
                    "bare+log": logged_url + path}
            totals = _measure(pids, urls, auth, sizes, stack)
        finally:
            stop_process(bare)
            stop_process(logged)
    _figures(results, store, sizes, stack, totals)


def _check_same(url: str, response: Any, auth: dict[str, str]) -> None:
    import httpx

    check = httpx.get(url, headers=auth)
    same = (check.content == response.content
            and check.headers["content-type"] == response.headers["content-type"]
            and check.headers.get("etag") == response.headers.get("etag"))
    if not same:
        raise RuntimeError("the bare app does not answer the same bytes")


def _measure(pids: dict[str, int], urls: dict[str, str], auth: dict[str, str], sizes: Sizes,
             stack: str) -> dict[str, dict[str, Any]]:
    totals: dict[str, dict[str, Any]] = {
        name: {"requests": 0, "seconds": 0.0, "cpu": 0.0, "p99": [], "errors": 0}
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
            say(f"  {stack} round {round_no + 1} {name}: {out['rate']:,.0f} req/s, "
                f"{out['ok'] / max(used, 1e-9):,.0f} req/CPU-s, p99 {out['p99_us']/1000:.1f} ms")
    return totals


def _figures(results: Results, store: str, sizes: Sizes, stack: str,
             totals: dict[str, dict[str, Any]]) -> None:
    on = f"[{STACKS[stack]}]"
    target = stack == TARGETS
    rate = {n: t["requests"] / t["seconds"] for n, t in totals.items()}
    per_cpu = {n: t["requests"] / max(t["cpu"], 1e-9) for n, t in totals.items()}
    p99 = {n: max(t["p99"]) for n, t in totals.items()}
    note = f"{sizes.connections} connections, {sizes.poll_rounds}×{sizes.poll_seconds:g} s each, in turns"
    errors = totals["threadsvc"]["errors"]
    results.add(Figure(ITEM, f"progress polls/s, threadsvc (Bearer, access log on) {on}", store,
                       rate["threadsvc"], "req/s",
                       note=note + (f"; {errors} errors" if errors else "")))
    results.add(Figure(ITEM, f"progress polls/s, bare Starlette, no access log (same bytes) {on}",
                       store, rate["bare"], "req/s"))
    results.add(Figure(ITEM, f"progress polls/s, bare Starlette with uvicorn's access log {on}",
                       store, rate["bare+log"], "req/s"))
    results.add(Figure(ITEM, f"ratio threadsvc / bare without access log {on}", store,
                       rate["threadsvc"] / rate["bare"], "×",
                       target=RATE_TARGET if target else None))
    results.add(Figure(ITEM, f"ratio threadsvc / bare with uvicorn's access log {on}", store,
                       rate["threadsvc"] / rate["bare+log"], "×"))
    results.add(Figure(ITEM, f"ratio per server CPU-second, without access log {on}", store,
                       per_cpu["threadsvc"] / per_cpu["bare"], "×",
                       note=f"{per_cpu['threadsvc']:,.0f} vs {per_cpu['bare']:,.0f} req per CPU-s"))
    results.add(Figure(ITEM, f"p99 latency, threadsvc / bare without access log {on}", store,
                       p99["threadsvc"] / p99["bare"], "×",
                       target=P99_TARGET if target else None, higher_is_better=False,
                       note=f"{p99['threadsvc']:.1f} ms vs {p99['bare']:.1f} ms "
                            f"(with uvicorn's access log {p99['bare+log']:.1f} ms)"))
