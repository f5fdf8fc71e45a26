"""The few primitives a SQL dialect gives the store's rules (threads.py, identity.py,
webhooks.py), which are written once over them: named queries run in a transaction, a lock, and
the batch writes whose SQL has no common form.

A rule is an `async def` taking a `Tx`. PostgreSQL awaits each statement; SQLite runs the rule on
its writer (or a reader) thread, where every primitive returns at once, so the rule never waits.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from threadsvc.models import NewLogEvent, Thread

T = TypeVar("T")
Row = Mapping[str, Any]  # columns by name, as both drivers give them
Args = Mapping[str, Any] | None
Where = Sequence[str] | None  # the filter_* fragments that fill a query's `{where}`


class Tx(Protocol):
    """One transaction of a dialect (or, for a one-statement read, one connection). `where`
    names the filter_* fragments that fill a query's `{where}` (listing.py)."""

    def array(self, values: list[Any]) -> Any:
        """A list as one argument, in the form the dialect's queries read it."""

    async def one(self, name: str, args: Args = None, where: Where = None) -> Row | None:
        """The first row of query `name`, None when it returns none."""

    async def all(self, name: str, args: Args = None, where: Where = None) -> list[Row]: ...

    async def value(self, name: str, args: Args = None, where: Where = None) -> Any:
        """The first column of the one row query `name` returns."""

    async def run(self, name: str, args: Args = None) -> int:
        """Execute statement `name`; how many rows it changed."""

    async def many(self, name: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Execute statement `name` once per row of arguments, as one batch (an import)."""

    async def lock(self, name: str, args: Args = None) -> None:
        """Take lock `name` till the transaction ends, making a read-then-write atomic across
        nodes (a no-op where one writer at a time has the store)."""

    async def claimed_log_seqs(self, claimed: list[Row]) -> dict[str, int]:
        """The last log seq of each thread that claim_threads returned (the rows)."""

    async def update_running(self, node: str, threads: list[Thread], now: int) -> set[str]:
        """Write the state of `node`'s threads; the ids not written (no longer the node's)."""

    async def insert_events(self, events: list[NewLogEvent]) -> None: ...

    async def queue_deliveries(self, changes: list[Thread]) -> None:
        """The webhook deliveries of these status changes (webhooks.sql, queue_deliveries)."""


Rule = Callable[[Tx], Coroutine[Any, Any, T]]


class Transactions(abc.ABC):
    """What each store gives the rules mixed into it: ways to run a rule."""

    @abc.abstractmethod
    async def _read(self, rule: Rule[T]) -> T:
        """Run a rule of one statement (no transaction needed)."""

    @abc.abstractmethod
    async def _snapshot(self, rule: Rule[T]) -> T:
        """Run a rule of several reads on one snapshot."""

    @abc.abstractmethod
    async def _write(self, rule: Rule[T]) -> T:
        """Run a rule in one write transaction: it happens whole or not at all."""
