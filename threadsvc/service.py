"""The use cases: each takes the calling Principal, decides whether they may, and does it.

Group routes check the caller's role in the group first (403), then find the thread, which
is reachable only under its own group (404 elsewhere). Server routes are for administrators,
except those an owner may use, which answer 404 to others so as not to reveal the thread.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from threadsvc import controls
from threadsvc.changes import Changes
from threadsvc.errors import (
    BadParameter,
    FileUnavailable,
    Forbidden,
    GroupNotFound,
    NoResult,
    ResultDeleted,
    ThreadNotFound,
    ThreadStillRunning,
    TooManyActiveThreads,
)
from threadsvc.lookups import SharedLookups
from threadsvc.models import (
    SERVER_GROUP_ID,
    ActiveLimits,
    Actor,
    AuditFilter,
    AuditPage,
    Group,
    Level,
    LogEvent,
    LogPage,
    Principal,
    Result,
    Role,
    Status,
    Thread,
    ThreadFilter,
    ThreadPage,
    now_ms,
)
from threadsvc.results import ResultFiles, ResultLinks
from threadsvc.runner.registry import JobSpec, Registry
from threadsvc.runner.runner import Runner
from threadsvc.settings import Settings
from threadsvc.store.base import Store
from threadsvc.store.controls import PausedJob
from threadsvc.store.dashboard import Figures
from threadsvc.uploads import Upload, Uploads

SYSTEM = "system"  # the owner of the server's own threads (the purge)
_THREAD_ID = re.compile(r"[0-9a-f]{32}")
_ID_START = re.compile(r"[0-9a-f]{8,31}")  # the start of a thread's id, as lists show it
_GROUP_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


def valid_group_name(name: str) -> bool:
    return _GROUP_NAME.fullmatch(name) is not None


def may_see_dashboard(who: Principal) -> bool:
    """Administrators, and managers (of their groups' threads: Service.dashboard_groups)."""
    return who.is_admin or any(role >= Role.MANAGER for role in who.roles.values())


@dataclass(frozen=True)
class GroupSummary:
    """A group as the groups page shows it to one user: their role in it (None: an
    administrator who is no member), and its threads by status when they may list them."""

    group: Group
    role: Role | None
    counts: dict[Status, int] | None


@dataclass(frozen=True)
class Where:
    """Where a request addresses threads: a group, or the server (group None)."""

    group: Group | None

    @property
    def group_id(self) -> int:
        return self.group.id if self.group else SERVER_GROUP_ID


IDEMPOTENCY_WINDOW = 24 * 3600 * 1000
CANCEL_WAIT = 1.0  # seconds a cancel waits for a running thread to end
LOG_ROLE = Role.CONTRIBUTOR  # the least role in a thread's group that may read its log
LIST_ROLE = Role.CONTRIBUTOR  # the least role in a group that may list all its threads
CANCEL_ROLE = Role.CONTRIBUTOR  # the least role in a thread's group that may cancel it
FIND_PREFIX_LIMIT = 50  # threads read for the start of an id (8 characters: rarely two)
DELETE_ROLE = Role.MANAGER  # the least role in a thread's group that may delete it
FILES_CHECK_SECONDS = 5.0  # how long /ready reuses its check of the file storage
log = logging.getLogger(__name__)


class Service:
    def __init__(
        self,
        store: Store,
        registry: Registry,
        runner: Runner,
        settings: Settings,
        links: ResultLinks,
        *,
        files: ResultFiles,
        uploads: Uploads,
        changes: Changes,
    ) -> None:
        self.store = store
        self.registry = registry
        self.runner = runner
        self.settings = settings
        self.links = links
        self.files = files
        self.uploads = uploads
        self.changes = changes
        self._files_checked: tuple[float, FileUnavailable | None] | None = None
        # Groups are never renamed or removed: a found one is reused for a few seconds.
        self._groups: SharedLookups[str, Group] = SharedLookups(
            10_000, max(settings.auth_cache_seconds, 1)
        )

    # -- where ------------------------------------------------------------------------------
    async def group(self, ref: str) -> Group:
        """A group by name, or by id when `ref` is purely numeric."""
        return await self._groups.get_or_look_up(ref, lambda: self._look_up_group(ref))

    async def _look_up_group(self, ref: str) -> Group:
        group: Group | None = None
        if ref.isascii() and ref.isdigit() and len(ref) < 19:
            group = await self.store.get_group_by_id(int(ref))
        elif valid_group_name(ref):
            group = await self.store.get_group(ref)
        if group is None:
            raise GroupNotFound(f"No group '{ref[:80]}'")
        return group

    async def groups_of(self, who: Principal) -> list[tuple[Group, Role]]:
        """The groups `who` is a member of, with their role in each."""
        return await self.store.groups_of(who.user.id)

    async def group_summaries(self, who: Principal) -> list[GroupSummary]:
        """The groups `who` may open, by name: an administrator every group, anyone else the
        groups they are a member of. Counts by status (from one store query, whatever the
        number of groups) where `who` may list the group's threads (`may_list`)."""
        if who.is_admin:
            roles = dict(await self.store.groups_of(who.user.id))
            found = [(group, roles.get(group)) for group, _ in await self.store.list_groups()]
        else:
            found = [(group, role) for group, role in await self.store.groups_of(who.user.id)]
        counts = await self.store.count_by_group_and_status() if found else {}
        return [
            GroupSummary(group, role,
                         counts.get(group.id, {}) if self.may_list(who, group) else None)
            for group, role in sorted(found, key=lambda pair: pair[0].name)
        ]

    def may_list(self, who: Principal, group: Group) -> bool:
        """Whether `who` may list every thread of `group` (`list_threads`); a member with a
        lesser role lists only the threads they started (`own_threads`)."""
        return who.has_role(group.id, LIST_ROLE)

    async def _scope(self, who: Principal, group_ref: str | None, minimum: Role) -> Where:
        if group_ref is None:
            if not who.is_admin:
                raise Forbidden("Only administrators may use this service")
            return Where(None)
        group = await self.group(group_ref)
        if not who.has_role(group.id, minimum):
            raise Forbidden(f"This needs the role {minimum.label} in group '{group.name}'")
        return Where(group)

    async def _thread(self, who: Principal, thread_id: str, scope: Where) -> Thread:
        thread = None
        if _THREAD_ID.fullmatch(thread_id):
            # A thread running here is read from memory: as new as the store, or newer.
            thread = self.runner.current(thread_id) or await self.store.get_thread(thread_id)
        if thread is None or (scope.group is not None and thread.group_id != scope.group.id):
            raise ThreadNotFound(f"No thread '{thread_id[:64]}'")
        return thread

    # -- reading ----------------------------------------------------------------------------
    async def list_threads(
        self, who: Principal, group_ref: str | None, query: ThreadFilter
    ) -> ThreadPage:
        scope = await self._scope(who, group_ref, LIST_ROLE)
        if scope.group is not None:
            query = _with_group(query, scope.group.id)
        return await self._listed(query)

    async def own_threads(self, who: Principal, group_ref: str, query: ThreadFilter) -> ThreadPage:
        """The threads `who` started in a group: any member may list these (a reviewer, who
        may open any thread of the group by id but not list them all, sees their own). The
        query's user is replaced by `who`."""
        scope = await self._scope(who, group_ref, Role.REVIEWER)
        assert scope.group is not None
        query = dataclasses.replace(query, group_id=scope.group.id, username=who.username)
        return await self._listed(query)

    async def _listed(self, query: ThreadFilter) -> ThreadPage:
        if query.job is not None and query.job not in {spec.name for spec in self.registry}:
            return ThreadPage([], 0, query.page, query.pagesize)  # an unknown type matches nothing
        return await self.store.list_threads(query)

    async def may_watch_list(self, who: Principal, group_ref: str | None) -> Group | None:
        """The group (None: the server) whose list `who` may follow live: the right to list
        it (`list_threads`'), asked again by a stream as it goes. Raises as the list does."""
        return (await self._scope(who, group_ref, LIST_ROLE)).group

    async def current_states(self, group: Group | None, ids: list[str]) -> list[Thread]:
        """The threads of these ids in `group`'s list (None: any), as they stand now, for a
        list that follows them (its right asked by `may_watch_list`)."""
        here = {i: t for i in ids if (t := self.runner.current(i)) is not None}  # newest
        stored = await self.store.get_threads([i for i in ids if i not in here])
        return [t for t in (*here.values(), *stored) if self.may_see_in_list(group, t)]

    def may_see_in_list(self, group: Group | None, thread: Thread) -> bool:
        """Whether `thread` belongs to the list of `group` (None: the server's, every thread)."""
        return group is None or thread.group_id == group.id

    async def get_thread(self, who: Principal, group_ref: str | None, thread_id: str) -> Thread:
        """The thread for the task resource and progress: reviewers of its group, or (server
        routes) its owner or an administrator."""
        if group_ref is not None:
            scope = await self._scope(who, group_ref, Role.REVIEWER)
            return await self._thread(who, thread_id, scope)
        thread = await self._thread(who, thread_id, Where(None))
        if not who.is_admin and thread.username != who.username:
            raise ThreadNotFound(f"No thread '{thread_id[:64]}'")
        return thread

    async def find_thread(self, who: Principal, thread_id: str) -> tuple[Thread, Group | None]:
        """A thread by its id, or by the first characters of it (at least 8, as lists show),
        and where `who` may open it: under its group when they may read it there
        (`get_thread`), else at server level when they own it or are an administrator.
        ThreadNotFound for a thread they may not open, as for one that does not exist; only
        threads they may open count, so an ambiguous start (BadParameter) tells nothing of
        others'."""
        wanted = thread_id.strip().lower()
        if _THREAD_ID.fullmatch(wanted):
            found = [await self._thread(who, wanted, Where(None))]
        elif _ID_START.fullmatch(wanted):
            query = ThreadFilter(statuses=frozenset(Status), id_prefix=wanted,
                                 pagesize=FIND_PREFIX_LIMIT)
            found = (await self.store.list_threads(query)).threads
        else:
            raise BadParameter("id", "is 32 hexadecimal characters (or at least its first 8)")
        places: list[tuple[Thread, Group | None]] = []
        for thread in found:
            may, in_group = self._may_open(who, thread)
            if may:
                places.append((thread, await self.group(str(thread.group_id)) if in_group else None))
        if not places:
            raise ThreadNotFound(f"No thread '{thread_id[:64]}'")
        if len(places) > 1:
            raise BadParameter("id", "begins several threads you may open: give more of it")
        return places[0]

    def _may_open(self, who: Principal, thread: Thread) -> tuple[bool, bool]:
        """Whether `who` may open `thread`, and whether under its group (else at server
        level): the rules of `get_thread` on either route."""
        if not thread.server_level and who.has_role(thread.group_id, Role.REVIEWER):
            return True, True
        return who.is_admin or thread.username == who.username, False

    def parameters(self, who: Principal, thread: Thread) -> dict[str, Any] | None:
        """The parameters `thread` was started with (uploaded files as their name, size and
        type, never where they are kept), for whoever may read its log (`may_read_log`): they
        may say as much as the log does. None for anyone else."""
        if not self.may_read_log(who, thread):
            return None

        def shown(value: Any) -> Any:
            if isinstance(value, dict):  # a saved upload
                return {k: value.get(k) for k in ("name", "size", "type")}
            if isinstance(value, list):
                return [shown(item) for item in value]
            return value

        return {name: shown(value) for name, value in thread.params.items()}

    def may_read_log(self, who: Principal, thread: Thread) -> bool:
        """Whether `who` may read `thread`'s log, by whatever route: a contributor of its group
        or an administrator (only administrators, for server-level threads). The logs service
        and the `log` events of a stream both follow it."""
        if thread.group_id == SERVER_GROUP_ID:
            return who.is_admin
        return who.has_role(thread.group_id, LOG_ROLE)

    async def logs(
        self,
        who: Principal,
        group_ref: str | None,
        thread_id: str,
        since: int,
        limit: int,
        level: Level,
        text: str | None = None,
    ) -> LogPage:
        """A page of a thread's log; with `text`, only the events holding it (the search of
        the logs service and of the console's thread page)."""
        scope = await self._scope(who, group_ref, LOG_ROLE)
        thread = await self._thread(who, thread_id, scope)
        return await self.read_log(who, thread, since, limit, level, text)

    async def read_log(
        self, who: Principal, thread: Thread, since: int, limit: int, level: Level = Level.DEBUG,
        text: str | None = None,
    ) -> LogPage:
        """The log of a thread in hand: for `logs`, and for an event stream, which found the
        thread with `get_thread` and checks its caller again as it goes."""
        if not self.may_read_log(who, thread):  # holds after the route's check; said once here
            raise Forbidden("Only contributors of the thread's group may read its log")
        if text:
            return await self.store.search_logs(thread.id, text, since, limit, level)
        return await self.store.get_logs(thread.id, since, limit, level)

    # -- who may start what, where: the one rule ----------------------------------------------
    async def may_start(
        self, who: Principal, group_ref: str | None, job_name: str | None = None
    ) -> Group | None:
        """The group (None: server level) where `who` may start `job_name`, or, with no job
        named, some job: the web layer asks this before it reads a body, and the start asks
        it again with the job the body named. Raises Forbidden, GroupNotFound, UnknownJob."""
        group = await self.group(group_ref) if group_ref is not None else None
        if job_name is None:
            self._may_start_here(who, group)
            return group
        self.job_for(who, group, job_name)
        return group

    def job_for(self, who: Principal, group: Group | None, job_name: str) -> JobSpec:
        """The job `who` may start here by that name (no awaiting: the form parsers call it
        when the job's field has arrived, before the rest of the body is read)."""
        self._may_start_here(who, group)
        spec = self.registry.get(job_name)
        if not spec.scope.allows(server_level=group is None):
            where = ("in groups only, not at server level" if group is None
                     else "at server level only, not in a group")
            raise BadParameter("job", f"names the job '{job_name}', which runs {where}")
        if group is not None and not who.has_role(group.id, spec.role):
            raise Forbidden(f"Job '{job_name}' needs the role {spec.role.label} in '{group.name}'")
        return spec

    def startable(self, who: Principal, group: Group | None) -> list[str]:
        """The jobs `who` may start here (what a start form offers): those `job_for` allows."""
        names = []
        for spec in self.registry:
            try:
                self.job_for(who, group, spec.name)
            except (Forbidden, BadParameter):
                continue
            names.append(spec.name)
        return names

    async def jobs(self, who: Principal, group_ref: str | None) -> list[JobSpec]:
        """The jobs service: what `who` may start here, by `startable`. Any member of the group
        or an administrator may ask (at server level, administrators only); a member whose role
        starts nothing gets an empty list."""
        scope = await self._scope(who, group_ref, Role.REVIEWER)
        return [self.registry.get(name) for name in self.startable(who, scope.group)]

    def _may_start_here(self, who: Principal, group: Group | None) -> None:
        """Server level: administrators only. A group: members with at least the lowest
        minimum role among the jobs that may run in a group (a member whose role starts
        nothing is refused as an outsider is)."""
        if group is None:
            if not who.is_admin:
                raise Forbidden("Only administrators may start server-level threads")
            return
        roles = [spec.role for spec in self.registry if spec.scope.allows(server_level=False)]
        lowest = min(roles, default=Role.APPROVER)
        if not who.has_role(group.id, lowest):
            raise Forbidden(
                f"Starting threads in group '{group.name}' needs at least the role {lowest.label}"
            )

    # -- changing ---------------------------------------------------------------------------
    async def start(
        self,
        who: Principal,
        group_ref: str | None,
        job_name: str,
        fields: Iterable[tuple[str, str | Upload]],
        idempotency_key: str | None = None,
    ) -> tuple[Thread, bool]:
        """Start a thread; (thread, False) when `idempotency_key` repeats an earlier start."""
        group = await self.group(group_ref) if group_ref is not None else None
        spec = self.job_for(who, group, job_name)
        params = spec.parse_params(fields)
        spec.check(who, group, params)
        thread_id = secrets.token_hex(16)
        params = await self.uploads.save(thread_id, params)
        try:
            thread, created = await self._insert(
                thread_id, who.username, group, spec.name, spec.thread_name(group), params,
                idempotency_key, request_hash=_request_hash(spec.name, params),
            )
        except BaseException:
            await self.uploads.discard(thread_id, params)
            raise
        if not created:
            await self.uploads.discard(thread_id, params)
        return thread, created

    async def _insert(
        self,
        thread_id: str,
        username: str,
        group: Group | None,
        job_name: str,
        name: str,
        params: dict[str, Any],
        idempotency_key: str | None,
        limits: ActiveLimits | None = None,
        request_hash: str | None = None,
    ) -> tuple[Thread, bool]:
        now = now_ms()
        thread = Thread(
            id=thread_id,
            name=name,
            username=username,
            group_id=group.id if group else SERVER_GROUP_ID,
            job=job_name,
            params=params,
            status=Status.INITIALISED,
            created=now,
            version=1,
        )
        first = LogEvent(1, now, Level.INFO, f"Status: initialised (job {job_name}, by {username})")
        limits = limits or ActiveLimits(
            self.settings.max_active_per_user, self.settings.max_active_per_group
        )
        stored, created = await self.store.insert_thread(
            thread,
            first,
            limits=limits,
            idempotency_key=idempotency_key,
            idempotency_since=now - IDEMPOTENCY_WINDOW,
            request_hash=request_hash,
        )
        if created:
            self.runner.thread_added()
        return stored, created

    def may_cancel(self, who: Principal, group_ref: str | None, thread: Thread) -> bool:
        """Whether `who` may cancel `thread` (found on a group route when `group_ref` is given,
        else on a server route), as `cancel` decides: not when it has ended already."""
        where = thread.group_id if group_ref is not None else SERVER_GROUP_ID
        return not thread.final and who.has_role(where, CANCEL_ROLE)

    async def cancel(self, who: Principal, group_ref: str | None, thread_id: str) -> Thread | None:
        """The thread as it stands after the request; None when there is no such thread here."""
        scope = await self._scope(who, group_ref, CANCEL_ROLE)
        try:
            thread = await self._thread(who, thread_id, scope)
        except ThreadNotFound:
            return None
        if thread.status is Status.INITIALISED:
            message = f"Cancelled by {who.username}"
            event = LogEvent(0, now_ms(), Level.INFO, f"Status: cancelled: {message}")
            done = await self.store.cancel_initialised(thread.id, message, event, by=who.actor)
            if done is not None:
                self.changes.publish([done])
                return done
            thread = await self._thread(who, thread_id, scope)  # claimed meanwhile: running
        if not thread.final:
            await self.store.request_cancel(thread.id, by=who.actor)
            if not await self.runner.cancel(thread.id, who.username):
                await self._until_final(thread, CANCEL_WAIT)  # another node runs it
            thread = await self._thread(who, thread_id, scope)
        return thread

    async def _until_final(self, thread: Thread, seconds: float) -> None:
        with self.changes.watch(thread.id) as watcher:
            deadline = asyncio.get_running_loop().time() + seconds
            current: Thread | None = thread
            while current is not None and not current.final:
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    return
                await watcher.wait(remaining)
                current = watcher.thread or current

    def may_cancel_here(self, who: Principal, group: Group | None) -> bool:
        """Whether `who` may cancel threads of a list here (a group, or None: server routes),
        as `cancel` decides before it finds the thread."""
        return who.has_role(group.id if group else SERVER_GROUP_ID, CANCEL_ROLE)

    def may_delete(self, who: Principal, group: Group | None) -> bool:
        """Whether `who` may delete ended threads here (a group, or None: server routes), as
        `delete` decides."""
        return who.has_role(group.id if group else SERVER_GROUP_ID, DELETE_ROLE)

    async def delete(self, who: Principal, group_ref: str | None, thread_id: str) -> None:
        scope = await self._scope(who, group_ref, DELETE_ROLE)
        thread = await self._thread(who, thread_id, scope)
        if not thread.final:
            raise ThreadStillRunning(f"Thread '{thread.id}' is {thread.status.value}; cancel it first")
        if not await self.store.delete_thread(thread.id, by=who.actor):
            raise ThreadNotFound(f"No thread '{thread_id}'")
        try:
            await self.files.delete(thread.result)
            await self.uploads.discard(thread.id, thread.params)
        except FileUnavailable as exc:  # the thread is gone: the purge removes its files later
            log.warning("could not delete the files of thread %s: %s", thread.id, exc)

    # -- results ----------------------------------------------------------------------------
    async def result(self, who: Principal, group_ref: str | None, thread_id: str) -> Thread:
        """The thread whose result is asked for: running (no answer yet), or final with a
        result still kept, or completed without one. Raises ResultDeleted or NoResult."""
        thread = await self.get_thread(who, group_ref, thread_id)
        if not thread.final:
            return thread
        return self.check_result(thread)

    def check_result(self, thread: Thread) -> Thread:
        result = thread.result
        if result is not None and not result.kept(now_ms()):
            raise ResultDeleted(f"The result of thread '{thread.id}' has been deleted")
        if result is None and thread.status is not Status.COMPLETED:
            raise NoResult(f"Thread '{thread.id}' {thread.status.value} without a result")
        return thread

    async def download(self, token: str) -> tuple[Thread, Result]:
        """The thread and result a pre-signed link names; no credentials needed."""
        thread = await self.store.get_thread(self.links.verify(token))
        if thread is None or thread.result is None or not thread.result.kept(now_ms()):
            raise ResultDeleted("This result has been deleted")
        return thread, thread.result

    # -- the server ------------------------------------------------------------------------
    async def audit(self, who: Principal, query: AuditFilter) -> AuditPage:
        """A page of the audit log: administrators only."""
        if not who.is_admin:
            raise Forbidden("Only administrators may read the audit log")
        return await self.store.audit_entries(query)

    # -- the dashboard and the controls (controls.py) ---------------------------------------
    def may_control(self, who: Principal) -> bool:
        """Pause jobs, set a node's max-running, drain nodes: administrators only."""
        return who.is_admin

    def dashboard_groups(self, who: Principal) -> list[int] | None:
        """Whose threads `who` sees on the dashboard: every one (None) for an administrator,
        else those of the groups they manage; Forbidden when they manage none."""
        if who.is_admin:
            return None
        managed = [g for g, role in who.roles.items() if role >= Role.MANAGER]
        if not managed:
            raise Forbidden("Only administrators and managers may see the dashboard")
        return managed

    def may_see_dashboard(self, who: Principal) -> bool:
        return may_see_dashboard(who)

    async def dashboard(self, who: Principal, since: int, width: int, buckets: int) -> Figures:
        """The dashboard's figures of the threads `who` may see (dashboard_groups)."""
        return await self.store.dashboard(since, width, buckets, self.dashboard_groups(who))

    def controller(self, who: Principal) -> Actor:
        """The Actor of an administrator using a control; Forbidden for anyone else."""
        if not self.may_control(who):
            raise Forbidden("Only administrators may use the server's controls")
        return who.actor

    async def pause_job(self, who: Principal, job: str, paused: bool = True) -> bool:
        """Pause (or resume) a job on every node; False when it already was (or was not)."""
        by = self.controller(who)
        if paused:
            return await controls.pause_job(self.store, job, by)
        return await controls.resume_job(self.store, job, by)

    async def paused_jobs(self, who: Principal) -> list[PausedJob]:
        self.controller(who)
        return await controls.paused_jobs(self.store)

    async def nodes(self, who: Principal) -> list[controls.NodeView]:
        self.controller(who)
        return await controls.nodes(self.store, self.settings.lease_timeout)

    async def set_max_running(
        self, who: Principal, node: str, most: str | None
    ) -> controls.NodeView:
        row = await controls.set_max_running(self.store, node, most, self.controller(who))
        return controls.view(row, self.settings.lease_timeout)

    async def drain(self, who: Principal, node: str, draining: bool = True) -> controls.NodeView:
        row = await controls.drain(self.store, node, self.controller(who), draining)
        return controls.view(row, self.settings.lease_timeout)

    async def thread_counts(self) -> dict[Status, int]:
        """Threads in the store by status, for /metrics (web/metrics.py says who may read it)."""
        return await self.store.count_by_status()

    async def check_store(self) -> None:
        """Raises StoreUnavailable when the store does not answer (for readiness)."""
        await self.store.count_by_status()

    async def check_files(self) -> None:
        """Raises FileUnavailable when the file storage cannot be written and read back (for
        readiness). The answer is reused for FILES_CHECK_SECONDS: a check writes a file, and
        /ready may be polled often by several balancers."""
        now = time.monotonic()
        if self._files_checked is None or now - self._files_checked[0] >= FILES_CHECK_SECONDS:
            try:
                await self.files.storage.check()
                failure: FileUnavailable | None = None
            except FileUnavailable as exc:
                failure = exc
            self._files_checked = (time.monotonic(), failure)
        failure = self._files_checked[1]
        if failure is not None:
            raise failure

    # -- retention --------------------------------------------------------------------------
    async def start_purge(self) -> Thread | None:
        """Start the purge as a server-level thread owned by `system`, when there is work and
        no purge is active already. Small deletions are done here, every time."""
        now = now_ms()
        await self.store.forget_idempotency_keys(now - IDEMPOTENCY_WINDOW)
        await self.store.forget_login_failures(now, self.settings.lockout_seconds * 1000)
        if self.settings.audit_ttl > 0:
            await self.store.forget_audit(now - self.settings.audit_ttl * 1000)
        active = await self.store.list_threads(
            ThreadFilter(job="purge", username=SYSTEM, pagesize=1)
        )
        if active.total:
            return None
        ttl_before = now - self.settings.thread_ttl * 1000
        results = await self.store.expired_results(now, 1)
        threads = await self.store.ended_before(ttl_before, 1)
        if not results and not threads:
            return None
        spec = self.registry.get("purge")
        # At most one active thread for `system`: however many nodes look at once, the store
        # lets one purge start (the limit is checked in the insert's transaction).
        try:
            thread, _ = await self._insert(
                secrets.token_hex(16), SYSTEM, None, spec.name, spec.thread_name(None), {},
                None, ActiveLimits(per_user=1, per_group=1),
            )
        except TooManyActiveThreads:
            return None
        return thread


def _request_hash(job_name: str, params: dict[str, Any]) -> str:
    """What a start asked for, to tell a retry from another request under the same key: the
    job and its parameters as parsed (so neither the order of the fields nor a default given
    or left out matters), each uploaded file as its name and content (not where it was put)."""

    def plain(value: Any) -> Any:
        if isinstance(value, dict):  # a saved upload
            return {"name": value.get("name"), "sha256": value.get("sha256")}
        if isinstance(value, list):
            return [plain(item) for item in value]
        return value

    asked = {"job": job_name, "params": {name: plain(v) for name, v in params.items()}}
    text = json.dumps(asked, sort_keys=True, default=str, ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _with_group(query: ThreadFilter, group_id: int) -> ThreadFilter:
    return dataclasses.replace(query, group_id=group_id)
