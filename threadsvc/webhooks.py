"""Webhooks (SPEC §8): who may manage them, which URLs they may name, and the delivery worker.

The store queues a delivery inside the transaction of every status change (a transactional
outbox, see store/webhooks.py); `DeliveryWorker` runs in each server (started in the
app's lifespan beside the runner) and sends what is due:

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

Addresses: unless `webhook-allow-private`, a URL whose host is, or resolves to, any address
that is not public is refused at registration and at each delivery (a refused attempt counts
as a failed one, code 0). The delivery then connects to the very address it checked (the
Host header and TLS name stay the URL's), so a DNS answer that changes in between cannot
redirect it to a private address.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import logging
import random
import socket
from collections.abc import Mapping
from typing import cast

import httpx

from threadsvc import __version__
from threadsvc.errors import BadParameter, Forbidden, StoreUnavailable, WebhookNotFound
from threadsvc.models import (
    SERVER_GROUP_ID,
    Delivery,
    DeliveryStatus,
    Principal,
    Role,
    Thread,
    Webhook,
    WebhookEvents,
    now_ms,
)
from threadsvc.results import ResultLinks
from threadsvc.retry import doubled
from threadsvc.service import Service
from threadsvc.settings import Settings
from threadsvc.store.base import DueDelivery, Store
from threadsvc.xml import render

log = logging.getLogger(__name__)

POLL = 0.5  # seconds between looks for due deliveries
LEASE = 30.0  # seconds a claimed delivery is this worker's (three times SEND_TIMEOUT)
SEND_TIMEOUT = 10.0  # seconds for one attempt: resolving, connecting, sending, the status line
BACKOFF_BASE = 1.0  # seconds; the first retry comes within this, each later one within twice
BACKOFF_CAP = 3600.0
GIVE_UP_AFTER = 24 * 3600.0  # seconds after the change
CONCURRENCY = 16  # attempts in flight per server
PRUNE_EVERY = 600.0  # seconds between deletions of deliveries older than `thread-ttl`
RECENT = 20  # deliveries shown with a webhook

MAX_URL = 2000
MIN_SECRET = 16  # characters: a short secret is guessed offline from one signed delivery
MAX_SECRET = 1000
CONTENT_TYPE = "application/xml;charset=utf-8"


# -- addresses ----------------------------------------------------------------------------------
class AddressRefused(Exception):
    """The URL's host is, or resolves to, an address that webhooks may not reach."""


_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def refusal(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why webhooks may not reach `address`, or None when it is a public unicast address."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return refusal(embedded)
    for kind in ("loopback", "unspecified", "link_local", "multicast", "private", "reserved"):
        if getattr(address, f"is_{kind}"):
            return f"is a {kind.replace('_', '-')} address"
    if not address.is_global:
        return "is not a public address"  # shared (100.64/10) and the like
    return None


async def resolve_public(url: httpx.URL) -> str:
    """The address to connect to for `url`: every address its host has must be public.

    Raises AddressRefused. Resolves with the event loop (never blocking it)."""
    host = url.raw_host.decode("ascii")
    if host == "localhost" or host.endswith(".localhost"):
        raise AddressRefused(f"host '{host}' is a loopback name")
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [literal]
    else:
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
        except (OSError, UnicodeError) as exc:
            raise AddressRefused(f"host '{host}' cannot be resolved ({exc})") from None
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
        if not addresses:
            raise AddressRefused(f"host '{host}' has no address")
    for address in addresses:
        why = refusal(address)
        if why is not None:
            raise AddressRefused(f"host '{host}' {why} ({address})")
    return str(addresses[0])


def parse_url(text: str) -> httpx.URL:
    """A webhook URL: http or https, with a host, without credentials. Raises BadParameter."""
    if not text:
        raise BadParameter("url", "is required")
    if len(text) > MAX_URL:
        raise BadParameter("url", f"is longer than {MAX_URL} characters")
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in text):
        raise BadParameter("url", "must not hold spaces or control characters")
    try:
        url = httpx.URL(text)
        url.raw_host.decode("ascii")
    except (httpx.InvalidURL, UnicodeError, ValueError):
        raise BadParameter("url", "is not a valid URL") from None
    if url.scheme not in ("http", "https"):
        raise BadParameter("url", "must be an http or https URL")
    if not url.raw_host:
        raise BadParameter("url", "must name a host")
    if url.userinfo:
        raise BadParameter("url", "must not hold credentials (the secret signs deliveries)")
    if url.port is not None and not 0 < url.port < 65536:
        raise BadParameter("url", "has a port out of range")
    return url


# -- signing ------------------------------------------------------------------------------------
def signature(secret: str, body: bytes) -> str:
    """`sha256=HEX`: HMAC-SHA256 of the exact body, keyed with the secret's UTF-8 bytes."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def timed_signature(secret: str, timestamp: int, delivery_id: str, body: bytes) -> str:
    """`t=TIMESTAMP,v1=HEX`: HMAC-SHA256 of `TIMESTAMP.DELIVERY_ID.BODY`, keyed as above.

    The body signature alone lets a captured delivery be replayed at any time, and under any
    delivery id (a receiver that ignores repeats would take it as new); this one binds the
    body to its delivery id and to the moment of the attempt, which a receiver checks against
    its clock (docs/webhooks.md)."""
    signed = f"{timestamp}.{delivery_id}.".encode("ascii") + body
    mac = hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def signed_headers(secret: str, delivery_id: str, body: bytes, timestamp: int) -> dict[str, str]:
    """The signature headers of one attempt; `timestamp` in whole seconds since the epoch."""
    return {
        "X-Threadsvc-Signature": signature(secret, body),
        "X-Threadsvc-Timestamp": str(timestamp),
        "X-Threadsvc-Signature-V2": timed_signature(secret, timestamp, delivery_id, body),
    }


def delivery_body(thread: Thread, link: render.ResultLink | None = None) -> bytes:
    return render.to_xml(render.thread_element(thread, admin=False, link=link))


def backoff(attempts: int) -> float:
    """Seconds before the next attempt after `attempts` failed ones: full jitter."""
    return random.uniform(0, doubled(BACKOFF_BASE, BACKOFF_CAP, attempts - 1))


# -- the use cases ------------------------------------------------------------------------------
class WebhookService:
    """Group webhooks need a manager of the group; server webhooks (group None) an administrator.

    The caller's right is checked first (403), then the parameters (400), then the webhook,
    which is reachable only under its own group (404 elsewhere)."""

    def __init__(self, store: Store, service: Service, settings: Settings) -> None:
        self.store = store
        self.service = service
        self.settings = settings

    async def authorize(self, who: Principal, group_ref: str | None) -> int:
        """The group id (-1: server) whose webhooks `who` may manage; else Forbidden."""
        if group_ref is None:
            if not who.is_admin:
                raise Forbidden("Only administrators may manage server webhooks")
            return SERVER_GROUP_ID
        group = await self.service.group(group_ref)
        if not who.has_role(group.id, Role.MANAGER):
            raise Forbidden(f"Webhooks of group '{group.name}' need the role manager")
        return group.id

    async def _webhook(self, group_id: int, ref: str) -> Webhook:
        webhook = None
        if ref.isascii() and ref.isdigit() and len(ref) < 19:
            webhook = await self.store.get_webhook(int(ref))
        if webhook is None or webhook.group_id != group_id:
            raise WebhookNotFound(f"No webhook '{ref[:64]}'")
        return webhook

    async def register(
        self, who: Principal, group_ref: str | None, fields: Mapping[str, str]
    ) -> Webhook:
        group_id = await self.authorize(who, group_ref)
        for name in fields:
            if name not in ("url", "secret", "events"):
                raise BadParameter(name[:64], "is not a webhook field (url, secret, events)")
        url = fields.get("url", "").strip()
        parse_url(url)
        secret = fields.get("secret", "")
        if not secret.strip():
            raise BadParameter("secret", "is required")
        if len(secret) < MIN_SECRET:  # webhooks registered before this rule keep theirs
            raise BadParameter("secret", f"must be at least {MIN_SECRET} characters")
        if len(secret) > MAX_SECRET:
            raise BadParameter("secret", f"is longer than {MAX_SECRET} characters")
        if "\x00" in secret:
            raise BadParameter("secret", "may not hold a NUL character")
        events = fields.get("events", "").strip() or "final"
        if events not in ("final", "all"):
            raise BadParameter("events", "must be final or all")
        await self.check_address(url)
        return await self.store.create_webhook(
            group_id, url, secret, cast(WebhookEvents, events), who.username, now_ms()
        )

    async def check_address(self, url: str) -> None:
        if not self.settings.webhook_allow_private:
            try:
                await resolve_public(parse_url(url))
            except AddressRefused as exc:
                raise BadParameter("url", f"is refused: {exc}") from None

    async def list_webhooks(self, who: Principal, group_ref: str | None) -> list[Webhook]:
        return await self.store.list_webhooks(await self.authorize(who, group_ref))

    async def get_webhook(
        self, who: Principal, group_ref: str | None, ref: str
    ) -> tuple[Webhook, list[Delivery]]:
        webhook = await self._webhook(await self.authorize(who, group_ref), ref)
        return webhook, await self.store.recent_deliveries(webhook.id, RECENT)

    async def delete(self, who: Principal, group_ref: str | None, ref: str) -> None:
        webhook = await self._webhook(await self.authorize(who, group_ref), ref)
        if not await self.store.delete_webhook(webhook.id):
            raise WebhookNotFound(f"No webhook '{ref[:64]}'")


# -- the delivery worker ------------------------------------------------------------------------
class DeliveryWorker:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        client: httpx.AsyncClient | None = None,
        links: ResultLinks | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self._links = links
        self._client = client
        self._own_client = client is None
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._inflight: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._last_prune = 0.0

    async def start(self) -> None:
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
        self._task = asyncio.create_task(self._loop(), name="webhook-deliveries")

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
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._task), 5.0)
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
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
        while not self._stopping.is_set():
            try:
                await self._round()
            except StoreUnavailable as exc:
                log.warning("webhook deliveries: store unavailable: %s", exc)
            except Exception:
                log.exception("webhook deliveries: unexpected error; going on")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL)
            self._wake.clear()

    async def _round(self) -> None:
        loop = asyncio.get_running_loop()
        if loop.time() - self._last_prune >= PRUNE_EVERY:
            self._last_prune = loop.time()
            pruned = await self.store.prune_deliveries(now_ms() - self.settings.thread_ttl * 1000)
            if pruned:
                log.info("pruned %d old webhook deliveries", pruned)
        free = CONCURRENCY - len(self._inflight)
        if free <= 0:
            return
        due = await self.store.next_delivery_due()  # a read: claiming is a write
        now = now_ms()
        if due is None or due > now:
            return
        for claimed in await self.store.claim_deliveries(now, int(LEASE * 1000), free):
            task = asyncio.create_task(
                self._deliver(claimed), name=f"webhook-{claimed.delivery.id}"
            )
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

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
            await self.store.record_attempt(delivery.id, now, code, status, next_attempt)
        except StoreUnavailable as exc:  # the lease runs out, and it is tried again
            log.warning("webhook delivery %s: attempt not recorded: %s", delivery.id, exc)
            return
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
