"""Schedules: the `[schedules.NAME]` tables of the settings, and the side task (`schedules`)
that starts a thread at each of their ticks, once across every node sharing the store.

    [schedules.nightly-report]
    job = "validate"              # the job to start
    group = "reports"             # where (absent: server level)
    owner = "alice"               # who the threads belong to: an existing user
    params = { level = "warn" }   # the job's parameters, as a start's form fields
    cron = "0 3 * * MON-FRI"      # five fields, or six with seconds first
    timezone = "Europe/Paris"     # an IANA name (default UTC)

Each tick starts a thread as if its owner had started it (`Service.start`: the job's role and
checks, the active-thread limits); a refused start is logged and recorded, not tried again.
Exactly once: a tick is claimed in the store (`Store.claim_tick`: one node wins), then started
under the idempotency key `schedule:NAME:TICK`; a claim whose node died before recording the
thread is taken over after `lease-timeout` (`Store.retake_tick`), and the key turns a start
that had happened into a replay. A tick missed by less than MISSED_GRACE (a restart) is run
late, once; one missed by more (every node down) is skipped.

Threat model: the tables are the operator's, trusted, but checked whole before the server
serves (`parse_schedules` the shape, `Scheduler.check` the owner, group, job and parameters):
a bad schedule stops the start with a message naming it, never at its first tick.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from threadsvc.errors import Forbidden, StoreUnavailable, ThreadsvcError
from threadsvc.models import Principal, now_ms
from threadsvc.settings import SettingsError, named_table

if TYPE_CHECKING:
    from threadsvc.service import Service

log = logging.getLogger(__name__)

KEYS = frozenset({"job", "group", "owner", "params", "cron", "timezone"})
MISSED_GRACE_MS = 60_000  # a tick this late (a restart) is still run; a later one is skipped
RETAKE_WITHIN_MS = 3_600_000  # claims older than this are not taken over: too late to start
KEEP_TICKS_MS = 24 * 3_600_000  # ticks kept (each schedule's latest is always kept)
MAX_SLEEP = 10.0  # seconds between looks for claims to take over


@dataclass(frozen=True)
class Schedule:
    """One `[schedules.NAME]` table, checked in shape."""

    name: str
    job: str
    group: str | None  # None: server level
    owner: str
    params: tuple[tuple[str, str], ...]  # form fields, a list's values one field each
    cron: str
    timezone: str = "UTC"

    @property
    def where(self) -> str:
        return self.group if self.group is not None else "server"

    def next_after(self, ms: int) -> int | None:
        """The first tick after `ms` (epoch milliseconds); None when none comes in 50 years."""
        try:
            return _ms(next(CronSim(self.cron, self._at(ms))))
        except StopIteration:
            return None

    def latest_at(self, ms: int) -> int | None:
        """The last tick at or before `ms`."""
        try:
            # Backwards, the sub-second part is dropped first: the whole second `ms` is in.
            return _ms(next(CronSim(self.cron, self._at(ms + 1), reverse=True)))
        except StopIteration:
            return None

    def shown(self, ms: int | None) -> str:
        """A tick as the schedule's local time, ISO 8601 with its offset."""
        return "-" if ms is None else self._at(ms).isoformat(timespec="seconds")

    def _at(self, ms: int) -> datetime:
        return datetime.fromtimestamp(ms / 1000, ZoneInfo(self.timezone))


def _ms(moment: datetime) -> int:
    return int(moment.astimezone(UTC).timestamp() * 1000)


def parse_schedules(tables: Mapping[str, Any]) -> dict[str, Schedule]:
    """Check the shape of the `[schedules.NAME]` tables; a SettingsError names the schedule
    and the key. What needs the store and the jobs is `Scheduler.check`'s."""
    return {name: _parse(name, table) for name, table in tables.items()}


def _parse(name: str, raw: Any) -> Schedule:
    table, bad = named_table("schedules", name, raw, KEYS)
    text: dict[str, str] = {}
    for key in ("job", "owner", "cron", "group", "timezone"):
        value = table.get(key)
        if value is None:
            if key in ("job", "owner", "cron"):
                raise bad(key, "is required")
            continue
        if not isinstance(value, str) or not value.strip():
            raise bad(key, "must be a non-empty string")
        text[key] = value.strip()
    params = table.get("params", {})
    if not isinstance(params, Mapping):
        raise bad("params", "must be a table of the job's parameters")
    schedule = Schedule(
        name=name, job=text["job"], group=text.get("group"), owner=text["owner"],
        params=tuple(_fields(params, bad)), cron=text["cron"],
        timezone=text.get("timezone", "UTC"),
    )
    try:
        ZoneInfo(schedule.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise bad("timezone", f"{schedule.timezone!r} is not an IANA time zone") from None
    try:
        CronSim(schedule.cron, datetime.now(UTC))
    except CronSimError as exc:
        raise bad("cron", f"{schedule.cron!r}: {exc}") from None
    if schedule.next_after(now_ms()) is None:
        raise bad("cron", f"{schedule.cron!r} never comes")
    return schedule


def _fields(params: Mapping[str, Any], bad: Any) -> Iterable[tuple[str, str]]:
    """A parameter's value as a start's form gives it: a string; a list, one field each."""
    for key, value in params.items():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, bool):
                yield key, "true" if item else "false"
            elif isinstance(item, str | int | float):
                yield key, str(item)
            else:
                raise bad(f"params.{key}", "must be a string, a number, a boolean or a list")


class Scheduler:
    """The side task of one node: at each tick of each schedule, claim it and start it."""

    def __init__(self, schedules: Mapping[str, Schedule], service: Service, node: str) -> None:
        self.schedules = dict(schedules)
        self.service = service
        self.store = service.store
        self.node = node
        self.lease_ms = service.settings.lease_timeout * 1000

    async def check(self) -> None:
        """Each schedule could start now: its owner exists (an administrator at server level),
        its group exists, the owner may start its job there, and the job's own parser takes its
        parameters. A SettingsError names the first that could not."""
        for schedule in self.schedules.values():
            try:
                who = await self._owner(schedule)
                group = await self.service.group(schedule.group) if schedule.group else None
                spec = self.service.job_for(who, group, schedule.job)
                spec.check(who, group, spec.parse_params(schedule.params))
            except StoreUnavailable:
                raise
            except ThreadsvcError as exc:
                raise SettingsError(f"setting 'schedules.{schedule.name}': {exc}") from None

    async def run(self) -> None:
        """Until cancelled: sleep to the next tick, claim and start what is due; take over the
        claims of nodes that died before starting theirs."""
        now = now_ms()
        due = {name: _first_due(s, now) for name, s in self.schedules.items()}
        retake_at = now
        while True:
            now = now_ms()
            for name, tick in list(due.items()):
                if tick is None or tick > now:
                    continue
                schedule = self.schedules[name]
                if now - tick <= MISSED_GRACE_MS:
                    await self._tick(schedule, tick)
                    due[name] = schedule.next_after(tick)
                else:
                    log.warning("schedule %s: skipped the ticks from %s, more than %d s ago",
                                name, schedule.shown(tick), MISSED_GRACE_MS // 1000)
                    due[name] = schedule.next_after(now - MISSED_GRACE_MS)
            if now >= retake_at:
                await self._retake(now)
                retake_at = now + int(MAX_SLEEP * 1000)
            upcoming = [tick for tick in due.values() if tick is not None] + [retake_at]
            wait = (min(upcoming) - now_ms()) / 1000
            await asyncio.sleep(min(max(wait, 0.0), MAX_SLEEP))

    async def _tick(self, schedule: Schedule, tick: int) -> None:
        if await self.store.claim_tick(schedule.name, tick, self.node, now_ms()):
            await self._start(schedule, tick)

    async def _retake(self, now: int) -> None:
        """Start the ticks whose claimer died before recording them (once one node takes each)."""
        stale = now - self.lease_ms
        for name, tick in await self.store.stale_ticks(stale, now - RETAKE_WITHIN_MS):
            schedule = self.schedules.get(name)  # a schedule since removed stays as it was
            if schedule is None:
                continue
            if await self.store.retake_tick(name, tick, self.node, now_ms(), stale):
                log.warning("schedule %s: the tick of %s was claimed by a node that did not "
                            "start it; starting it here", name, schedule.shown(tick))
                await self._start(schedule, tick)

    async def _start(self, schedule: Schedule, tick: int) -> None:
        """Start the tick's thread as its owner; a refusal is logged and recorded. A store
        outage raises: the claim stays open, to be taken over after the lease."""
        thread_id, outcome = None, None
        try:
            who = await self._owner(schedule)
            thread, _ = await self.service.start(
                who, schedule.group, schedule.job, schedule.params,
                idempotency_key=f"schedule:{schedule.name}:{tick}",
            )
            thread_id = thread.id
            log.info("schedule %s: the tick of %s started thread %s",
                     schedule.name, schedule.shown(tick), thread_id)
        except StoreUnavailable:
            raise
        except ThreadsvcError as exc:
            outcome = f"{type(exc).__name__}: {exc}"[:500]
            log.warning("schedule %s: the tick of %s was refused: %s",
                        schedule.name, schedule.shown(tick), outcome)
        await self.store.record_tick(
            schedule.name, tick, self.node, thread_id=thread_id, outcome=outcome,
            forget_before=now_ms() - KEEP_TICKS_MS,
        )

    async def _owner(self, schedule: Schedule) -> Principal:
        found = await self.store.get_user(schedule.owner)
        if found is None:
            raise Forbidden(f"owner '{schedule.owner}' is not a user, or is disabled")
        user = found[0]
        return Principal(user, await self.store.roles_of(user.id))


def _first_due(schedule: Schedule, now: int) -> int | None:
    """The first tick to look at on start: the last one, if it was missed by little (a
    restart; the store knows whether a node ran it), else the next."""
    latest = schedule.latest_at(now)
    if latest is not None and now - latest <= MISSED_GRACE_MS:
        return latest
    return schedule.next_after(now)
