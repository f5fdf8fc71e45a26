"""8. The webhook outbox: how long finding and claiming due deliveries takes with 1,000, 100,000
and 1,000,000 pending deliveries (to 100 webhooks of one group, all due), on each store. The
figures should be flat: both are index probes per webhook, whatever the outbox holds.

The rows are written with SQL, as a flood of changes to dead receivers would leave them.
"""

from __future__ import annotations

import asyncio
import sqlite3
import statistics
import time
from pathlib import Path

from tests.bench.common import Figure, Results, Stores, say
from tests.bench.sizes import Sizes
from threadsvc.models import Status, Thread, now_ms
from threadsvc.settings import Settings
from threadsvc.store import make_store
from threadsvc.store.rows import snapshot_json

ITEM = "8 outbox"
WEBHOOKS = 100
SNAPSHOT = snapshot_json(Thread(
    id="0" * 32, name="Sleep thread", username="contributor", group_id=240, job="sleep",
    params={}, status=Status.COMPLETED, created=0, started=0, ended=0, version=3,
))
FILL = """
INSERT INTO webhook_deliveries
    (id, webhook_id, thread_id, event, snapshot, status, attempts, next_attempt, created)
SELECT {id}, {webhook}, {thread}, 'final', :snapshot, 'pending', 0, :now, :now
FROM {series}
"""


def run(results: Results, stores: Stores, sizes: Sizes, work: Path) -> None:
    for store_name in stores.names:
        for pending in sizes.outbox_rows:
            url = stores.url(store_name, work / f"outbox-{store_name}-{pending}")
            due, claim = asyncio.run(measure(url, pending, sizes.read_repeats))
            say(f"  {store_name}, {pending:,} pending: due {due:.2f} ms, claim {claim:.2f} ms")
            results.add(Figure(ITEM, f"next due, {pending:,} pending (median)", store_name,
                               due, "ms", higher_is_better=False))
            results.add(Figure(ITEM, f"claim 16, {pending:,} pending (median)", store_name,
                               claim, "ms", higher_is_better=False))


async def measure(url: str, pending: int, repeats: int) -> tuple[float, float]:
    store = make_store(Settings(db=url))
    await store.open()
    try:
        webhooks = [
            (await store.create_webhook(240, f"http://127.0.0.1:9/{i}", "s" * 20, "final", "m",
                                        now_ms())).id
            for i in range(WEBHOOKS)
        ]
        await asyncio.to_thread(flood, url, min(webhooks), len(webhooks), pending)
        due, claims = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            await store.next_delivery_due()
            due.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            claimed = await store.claim_deliveries(now_ms(), 60_000, 16, workers=16, share=0.5)
            claims.append((time.perf_counter() - t0) * 1000)
            if len(claimed) != 16:
                raise RuntimeError(f"claimed {len(claimed)} of 16")
        return statistics.median(due), statistics.median(claims)
    finally:
        await store.close()


def flood(url: str, first: int, webhooks: int, pending: int) -> None:
    """`pending` due deliveries, each of its own thread, spread over the webhooks of ids
    `first` .. `first + webhooks - 1`; no ANALYZE after (a flood does not wait for one: the
    plans must hold with the statistics of before)."""
    args = {"snapshot": SNAPSHOT, "now": now_ms()}
    if url.startswith("sqlite:///"):
        numbers = (f"(WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s "
                   f"WHERE n < {pending}) SELECT n FROM s)")
        sql = FILL.format(id="lower(hex(randomblob(16)))", webhook=f"{first} + n % {webhooks}",
                          thread="printf('%032x', n)", series=numbers)
        with sqlite3.connect(url.removeprefix("sqlite:///"), timeout=30) as conn:
            conn.execute(sql, args)
        return
    import psycopg

    sql = FILL.format(id="md5(n::text)", webhook=f"{first} + mod(n, {webhooks})",
                      thread="lpad(to_hex(n), 32, '0')",
                      series=f"generate_series(1, {pending}) AS n")
    with psycopg.connect(url) as conn:
        conn.execute(sql.replace(":snapshot", "%(snapshot)s").replace(":now", "%(now)s"), args)
