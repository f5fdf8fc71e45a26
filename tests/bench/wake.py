"""6. Long-polls and streams: N clients long-polling, or holding event streams, on one node, all
woken by one change (a cancel)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.bench.common import (
    USER,
    Figure,
    Results,
    Stores,
    bench_server,
    group_path,
    run_json,
    say,
    start_thread,
    wait_thread,
)
from tests.bench.sizes import Sizes

ITEM = "6 long-polls/SSE"
MODES = {"longpoll": "long-polls (?wait=60)", "sse": "event streams (…/events)"}


def run(results: Results, stores: Stores, store: str, sizes: Sizes, work: Path) -> None:
    directory = work / f"wake-{store}"
    n = sizes.waiters
    # Every client is the one user `contributor`: lift the per-user quota of event streams.
    settings = {"max-streams-per-user": 10 * n}
    with bench_server(directory, stores.url(store, directory), **settings) as (server, tokens):
        for mode, label in MODES.items():
            with server.bearer(tokens[USER]) as client:
                thread = start_thread(client, "hold", seconds=86_400)
                wait_thread(client, thread["id"], lambda t: t.get("progress") is not None)
                etag = client.get(group_path(thread["id"], "/progress")).headers["etag"]
            spec = {
                "host": "127.0.0.1", "port": server.port, "token": tokens[USER], "mode": mode,
                "n": n, "thread_path": group_path(thread["id"]), "etag": etag,
                "server_pid": server.pid,
            }
            out = run_json([sys.executable, "-m", "tests.bench.wake_clients", json.dumps(spec)],
                           timeout=900)
            say(f"  {mode}: {out['woken']:,}/{n:,} woken, p50 {out['p50_ms']:.0f} ms, "
                f"max {out['max_ms']:.0f} ms; connected in {out['connect_seconds']:.1f} s; "
                f"errors {out['errors']} ({out['first_error']}); cancel answered in "
                f"{out['cancel_answered_ms']:.0f} ms")
            complete = out["woken"] == n and not out["errors"] and not out["early"]
            value = out["max_ms"] / 1000 if complete else None
            note = (f"p50 {out['p50_ms']:.0f} ms, p99 {out['p99_ms']:.0f} ms; "
                    f"{out['within_1s']:,} of {n:,} within 1 s")
            if not complete:
                note += (f"; only {out['woken']:,} woken, {out['errors']} errors "
                         f"({out['first_error'][:80]}), {out['early']} early")
            results.add(Figure(ITEM, f"{n:,} {label}: last woken after one change", store,
                               value, "s", target=1.0, higher_is_better=False, note=note))
