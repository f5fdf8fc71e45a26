"""This node's Prometheus figures: one registry per application (several apps may live in one
process, as in the tests), counted where things happen (the runner, the webhook deliveries,
sign-ins, the HTTP middleware of web/metrics.py) and read out by `/metrics`.

Threat model: anyone may make requests, and many of them. No label value comes from what a
client sends: statuses, methods, outcomes and route templates are the server's own short lists,
job names are the registered ones, and a path that matches no route is the one label
UNMATCHED; so no caller can grow the number of series (and with it the memory and the scrape).
Who may read the figures is web/metrics.py's to decide.

The figures of the store (`threadsvc_threads`) are the whole store's, the same on every node
sharing it: they carry no node label, and are aggregated across nodes with max(), not sum()
(docs/decisions.md). Everything else is this node's own.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import anyio.to_thread
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from threadsvc import __version__
from threadsvc.models import FINAL, Status, Thread
from threadsvc.store.base import Store

UNMATCHED = "unmatched"  # the route of every path no route matches
OTHER_METHOD = "other"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
# A delivery attempt's outcome: the store's status after it ("pending" is a retry to come),
# and deliveries dropped unsent past `max-pending-deliveries`.
DELIVERY_OUTCOMES = {"delivered": "delivered", "pending": "retrying", "failed": "failed"}
GIVEN_UP = "given_up"
INF = math.inf
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, INF)
QUEUE_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, INF)
RUN_BUCKETS = (0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600, INF)

# Counters without their `_created` twin: one series each, not two.
disable_created_metrics()  # type: ignore[no-untyped-call]


class StoreErrors:
    """`threadsvc_store_errors_total`, read from the store's own count when scraped."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily(
            "threadsvc_store_errors",
            "Store operations that failed because the database could not be reached or failed.",
        )
        family.add_metric([], self.store.errors)
        yield family


class Metrics:
    def __init__(self, store: Store | None = None) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        for collector in (ProcessCollector, PlatformCollector, GCCollector):
            collector(registry=registry)
        if store is not None:
            registry.register(StoreErrors(store))
        Gauge("threadsvc_build_info", "The version of threadsvc this node runs (always 1).",
              ["version"], registry=registry).labels(__version__).set(1)
        self.threads = Gauge(
            "threadsvc_threads",
            "Threads in the whole store by status, the same on every node: aggregate with max().",
            ["status"], registry=registry,
        )
        self.running = Gauge("threadsvc_running_threads", "Threads this node is running.",
                             ["node"], registry=registry)
        self.slots = Gauge("threadsvc_thread_slots",
                           "Threads this node may run at once (max-running).",
                           ["node"], registry=registry)
        self.clock_offset = Gauge(
            "threadsvc_clock_offset_seconds",
            "What this node adds to its own clock to agree with the database's (0 when within "
            "0.1 s, and with SQLite).",
            registry=registry,
        )
        self.started = Counter("threadsvc_threads_started", "Threads this node started, by job.",
                               ["job"], registry=registry)
        self.finished = Counter(
            "threadsvc_threads_finished",
            "Threads whose final status this node wrote, by job and status.",
            ["job", "status"], registry=registry,
        )
        self.queue = Histogram(
            "threadsvc_thread_queue_seconds",
            "Seconds threads waited between their start request and running, on this node.",
            registry=registry, buckets=QUEUE_BUCKETS,
        )
        self.run = Histogram(
            "threadsvc_thread_run_seconds",
            "Seconds threads ran, from started to their final status, by job.",
            ["job"], registry=registry, buckets=RUN_BUCKETS,
        )
        self.http = Histogram(
            "threadsvc_http_request_duration_seconds",
            "Seconds from a request's arrival to its answer's head, by method, route template "
            "and status.",
            ["method", "route", "status"], registry=registry, buckets=HTTP_BUCKETS,
        )
        self.deliveries = Counter(
            "threadsvc_webhook_deliveries",
            "Webhook delivery attempts by outcome (delivered, retrying, failed: given up after "
            "the last attempt), and deliveries given up unsent past max-pending-deliveries.",
            ["outcome"], registry=registry,
        )
        for outcome in (*DELIVERY_OUTCOMES.values(), GIVEN_UP):
            self.deliveries.labels(outcome)
        self.signin_failures = Counter(
            "threadsvc_signin_failures",
            "Passwords and OAuth client secrets checked and found wrong.",
            registry=registry,
        )
        self._jobs: set[str] = set()
        # (method, route, status) -> its histogram: labels() checks and locks on every call.
        self._requests: dict[tuple[str, str, int], Histogram] = {}

    # -- threads (runner/runner.py) ---------------------------------------------------------
    def _job(self, job: str) -> None:
        """A job's series, all at zero, from its first thread on (so rates and ratios have
        every series they divide by)."""
        if job not in self._jobs:
            self._jobs.add(job)
            self.started.labels(job)
            self.run.labels(job)
            for status in FINAL:
                self.finished.labels(job, status.value)

    def thread_started(self, thread: Thread) -> None:
        self._job(thread.job)
        self.started.labels(thread.job).inc()
        if thread.started is not None:
            self.queue.observe(max(0, thread.started - thread.created) / 1000)

    def thread_finished(self, thread: Thread) -> None:
        self._job(thread.job)
        self.finished.labels(thread.job, thread.status.value).inc()
        if thread.started is not None and thread.ended is not None:
            self.run.labels(thread.job).observe(max(0, thread.ended - thread.started) / 1000)

    # -- the rest ---------------------------------------------------------------------------
    def delivery_attempted(self, status: str) -> None:
        """A webhook delivery attempt recorded with the store status `status`."""
        self.deliveries.labels(DELIVERY_OUTCOMES.get(status, status)).inc()

    def deliveries_given_up(self, count: int) -> None:
        self.deliveries.labels(GIVEN_UP).inc(count)

    def signin_failed(self) -> None:
        self.signin_failures.inc()

    def request(self, method: str, route: str, status: int, seconds: float) -> None:
        """One answer; `route` is a route template or UNMATCHED, never a raw path."""
        key = (method if method in METHODS else OTHER_METHOD, route, status)
        child = self._requests.get(key)
        if child is None:
            child = self._requests[key] = self.http.labels(key[0], route, str(status))
        child.observe(seconds)

    # -- /metrics ---------------------------------------------------------------------------
    async def exposition(
        self, counts: Mapping[Status, int], *, node: str, running: int, slots: int,
        clock_offset_ms: int, accept: str = "",
    ) -> tuple[bytes, str]:
        """The text of every figure, in the format `accept` asks for (Prometheus text 0.0.4
        unless it names a newer one, or OpenMetrics), with the figures read at scrape time.
        Written in a worker thread: a few hundred HTTP series take tens of milliseconds to
        format, which the event loop must not wait for (the metrics take their own locks)."""
        for status in Status:
            self.threads.labels(status.value).set(counts.get(status, 0))
        self.running.labels(node).set(running)
        self.slots.labels(node).set(slots)
        self.clock_offset.set(clock_offset_ms / 1000)
        encoder, content_type = choose_encoder(accept)
        return await anyio.to_thread.run_sync(encoder, self.registry), content_type
