"""The delivery worker: `DeliveryWorker` runs in each server (started in the app's lifespan
beside the runner) and sends the deliveries that are due:

- it polls the store every `POLL` seconds (the store hook cannot reach an event of the
  worker, and with several nodes the change may be queued by another process), and at once
  after a success, so that a thread's next change follows without waiting for the next poll;
- it claims each delivery before sending it (its `next_attempt` moves `LEASE` ahead), so no
  other worker or node sends it meanwhile; only the oldest pending delivery of a (webhook,
  thread) is ever claimable, so a thread's changes arrive in order;
- each attempt POSTs the `<thread>` of the snapshot, signed (the body alone, and the attempt's
  timestamp with the delivery id and the body), within `SEND_TIMEOUT` seconds;
  any 2xx is success, anything else (a redirect included: they are not followed) is retried
  after a random delay of up to BACKOFF_BASE × 2^(attempts-1) seconds (full jitter), at
  most BACKOFF_CAP, until GIVE_UP_AFTER after the change, when the delivery is `failed`.

Many tenants share the workers, and some receivers are dead or slow on purpose:
- claims are fair (store/fair.py): by group, then webhook, against the attempts in flight, so
  one group's receivers hold at most `SHARE` of the workers while another group's deliveries
  wait, and a slow one delays another group's by at most one attempt (SEND_TIMEOUT);
- a webhook whose attempts failed BREAK_AFTER times in a row is paused (the circuit opens)
  for PAUSE_BASE seconds, doubled with each further failure up to PAUSE_CAP: none of its
  deliveries is claimed meanwhile, then one is tried; a 2xx closes the circuit;
- every TRIM_EVERY seconds, a webhook holding more than `max-pending-deliveries` pending
  deliveries has its oldest given up (`failed`), counted in `given_up` and logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import Counter
from typing import TYPE_CHECKING

import httpx

from threadsvc import __version__
from threadsvc.delivery.address import AddressRefused, resolve_public
from threadsvc.delivery.signing import signed_headers
from threadsvc.errors import StoreUnavailable
from threadsvc.models import DeliveryStatus, DueDelivery, Thread, now_ms
from threadsvc.results import ResultLinks
from threadsvc.retry import doubled
from threadsvc.runner.supervisor import Supervised, Supervisor
from threadsvc.settings import Settings
from threadsvc.store.base import Store
from threadsvc.store.fair import Owner
from threadsvc.xml import render

if TYPE_CHECKING:  # the server's only: administrative commands do without prometheus_client
    from threadsvc.metrics import Metrics

log = logging.getLogger(__name__)

POLL = 0.5  # seconds between looks for due deliveries
LEASE = 30.0  # seconds a claimed delivery is this worker's (three times SEND_TIMEOUT)
SEND_TIMEOUT = 10.0  # seconds for one attempt: resolving, connecting, sending, the status line
BACKOFF_BASE = 1.0  # seconds; the first retry comes within this, each later one within twice
BACKOFF_CAP = 3600.0
GIVE_UP_AFTER = 24 * 3600.0  # seconds after the change
CONCURRENCY = 16  # attempts in flight per server
SHARE = 0.5  # of the workers, one group's receivers may hold while another's deliveries wait
BREAK_AFTER = 5  # consecutive failed attempts of a webhook that pause it
PAUSE_BASE = 30.0  # seconds of the first pause; each further failure doubles it
PAUSE_CAP = 3600.0
TRIM_EVERY = 30.0  # seconds between looks for webhooks over `max-pending-deliveries`
PRUNE_EVERY = 600.0  # seconds between deletions of deliveries older than `thread-ttl`
CONTENT_TYPE = "application/xml;charset=utf-8"


def delivery_body(thread: Thread, link: render.ResultLink | None = None) -> bytes:
    return render.to_xml(render.thread_element(thread, admin=False, link=link))


def backoff(attempts: int) -> float:
    """Seconds before the next attempt after `attempts` failed ones: full jitter."""
    return random.uniform(0, doubled(BACKOFF_BASE, BACKOFF_CAP, attempts - 1))


class DeliveryWorker:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        client: httpx.AsyncClient | None = None,
        links: ResultLinks | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self._links = links
        self._client = client
        self._own_client = client is None
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._inflight: dict[asyncio.Task[None], Owner] = {}
        self._task: Supervised | None = None
        self._last_prune = 0.0
        self._last_trim = 0.0
        self.given_up = 0  # deliveries given up past `max-pending-deliveries` since start
        self.metrics = metrics  # the server's, which counts the outcomes (/metrics)

    async def start(self, supervisor: Supervisor) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=SEND_TIMEOUT,
                follow_redirects=False,
                trust_env=False,  # no proxy from the environment: the checked address is used
                headers={"User-Agent": f"threadsvc-webhooks/{__version__}"},
            )
        if not self.store.shared:
            # Alone on its store: any lease is a crashed predecessor's; send those now rather
            # than after LEASE (retrying sooner than a backoff planned is harmless).
            await self.store.release_all_deliveries(now_ms())
        self._task = supervisor.spawn("webhook-deliveries", self._loop)

    async def stop(self, grace: float | None = None) -> None:
        """Stop claiming; give attempts in flight `grace` seconds (default: the setting
        `shutdown-grace`, at most SEND_TIMEOUT), then cancel them: their deliveries are
        released, due again at once for the next worker (or this one after a restart)."""
        if grace is None:
            grace = min(self.settings.shutdown_grace, SEND_TIMEOUT)
        self._stopping.set()
        self._wake.set()
        if self._task is not None:
            # The loop ends after its current round; cancelling it in the middle of a claim
            # would leave what it claimed leased for LEASE seconds.
            await self._task.join(5.0)
            await self._task.stop()
        if self._inflight:
            await asyncio.wait(list(self._inflight), timeout=grace)
        for task in list(self._inflight):
            task.cancel()
        await asyncio.gather(*self._inflight, return_exceptions=True)
        if self._own_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    def wake(self) -> None:
        self._wake.set()

    async def _loop(self) -> None:
        """Rounds until stopped. A store outage is waited out here; anything else ends the
        loop, and the supervisor logs it, starts it again and, if it keeps dying, says so in
        /ready."""
        while not self._stopping.is_set():
            try:
                await self._round()
            except StoreUnavailable as exc:
                log.warning("webhook deliveries: store unavailable: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL)
            self._wake.clear()

    async def _round(self) -> None:
        await self._housekeeping()
        free = CONCURRENCY - len(self._inflight)
        if free <= 0:
            return
        due = await self.store.next_delivery_due()  # a read: claiming is a write
        now = now_ms()
        if due is None or due > now:
            return
        busy = Counter(self._inflight.values())
        claims = await self.store.claim_deliveries(
            now, int(LEASE * 1000), free, busy=busy.items(), workers=CONCURRENCY, share=SHARE
        )
        for claimed in claims:
            task = asyncio.create_task(
                self._deliver(claimed), name=f"webhook-{claimed.delivery.id}"
            )
            self._inflight[task] = (claimed.webhook.group_id, str(claimed.webhook.id))
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.pop(task, None)
        self._wake.set()  # a worker is free: another group's delivery may be waiting for one

    async def _housekeeping(self) -> None:
        """Prune old deliveries now and then; give up what a webhook holds past the cap."""
        clock = asyncio.get_running_loop().time()
        if clock - self._last_prune >= PRUNE_EVERY:
            self._last_prune = clock
            pruned = await self.store.prune_deliveries(now_ms() - self.settings.thread_ttl * 1000)
            if pruned:
                log.info("pruned %d old webhook deliveries", pruned)
        if clock - self._last_trim >= TRIM_EVERY:
            self._last_trim = clock
            most = self.settings.max_pending_deliveries
            for webhook_id, count in (await self.store.give_up_excess(most, now_ms())).items():
                self.given_up += count
                if self.metrics is not None:
                    self.metrics.deliveries_given_up(count)
                log.warning(
                    "webhook %d: gave up its %d oldest pending deliveries (it held more than "
                    "max-pending-deliveries, %d)", webhook_id, count, most,
                )

    async def _deliver(self, due: DueDelivery) -> None:
        delivery = due.delivery
        try:
            code = await self.attempt(due)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.store.release_delivery(delivery.id, now_ms()))
            raise
        except Exception:  # a bug, not the receiver's doing: still a failed attempt
            log.exception("webhook %d delivery %s: attempt failed", due.webhook.id, delivery.id)
            code = 0
        now = now_ms()
        status: DeliveryStatus
        if 200 <= code < 300:
            status, next_attempt = "delivered", now
        else:
            next_attempt = now + int(backoff(delivery.attempts + 1) * 1000)
            gave_up = next_attempt >= delivery.created + int(GIVE_UP_AFTER * 1000)
            status = "failed" if gave_up else "pending"
        try:
            failures = await self.store.record_attempt(
                delivery.id, now, code, status, next_attempt
            )
            if failures >= BREAK_AFTER:
                pause = doubled(PAUSE_BASE, PAUSE_CAP, failures - BREAK_AFTER)
                await self.store.pause_webhook(due.webhook.id, now + int(pause * 1000))
                log.warning(
                    "webhook %d paused for %.0f s after %d failed attempts in a row",
                    due.webhook.id, pause, failures,
                )
        except StoreUnavailable as exc:  # the lease runs out, and it is tried again
            log.warning("webhook delivery %s: attempt not recorded: %s", delivery.id, exc)
            return
        if self.metrics is not None:
            self.metrics.delivery_attempted(status)
        level = logging.INFO if status == "delivered" else logging.WARNING
        log.log(
            level,
            "webhook %d delivery %s (%s of thread %s): attempt %d, code %d, %s",
            due.webhook.id,
            delivery.id,
            delivery.event,
            delivery.thread_id,
            delivery.attempts + 1,
            code,
            status,
        )
        if status == "delivered":
            self._wake.set()  # the thread's next change may be waiting behind this one

    def _result_link(self, thread: Thread) -> render.ResultLink | None:
        """A link to the result, signed now, when the server knows its public URL."""
        base = self.settings.public_url.rstrip("/")
        if not base or self._links is None or thread.result is None:
            return None
        if not thread.final or not thread.result.kept(now_ms()):
            return None
        link = self._links.sign(thread.id)
        return render.ResultLink(f"{base}/ps/service/results/{link.token}", link.expires)

    async def attempt(self, due: DueDelivery) -> int:
        """Send once; the HTTP status, or 0 when no response came (refused address included)."""
        assert self._client is not None
        body = delivery_body(due.thread, self._result_link(due.thread))
        headers = {
            "Content-Type": CONTENT_TYPE,
            **signed_headers(due.webhook.secret, due.delivery.id, body, now_ms() // 1000),
            "X-Threadsvc-Delivery": due.delivery.id,
            "X-Threadsvc-Event": due.delivery.event,
        }
        extensions: dict[str, str] = {}
        try:
            async with asyncio.timeout(SEND_TIMEOUT):
                url = httpx.URL(due.webhook.url)
                if not self.settings.webhook_allow_private:
                    address = await resolve_public(url)
                    headers["Host"] = url.netloc.decode("ascii")
                    if url.scheme == "https":
                        extensions["sni_hostname"] = url.raw_host.decode("ascii")
                    url = url.copy_with(host=address)
                async with self._client.stream(
                    "POST", url, content=body, headers=headers, extensions=extensions
                ) as response:
                    return response.status_code
        except AddressRefused as exc:
            log.warning("webhook %d: %s; not sent", due.webhook.id, exc)
        except (httpx.HTTPError, OSError, TimeoutError, ValueError) as exc:
            log.info("webhook %d: no answer from its URL: %s", due.webhook.id, exc or type(exc))
        return 0
