"""The use cases: each takes the calling Principal, decides whether they may, and does it.

Group routes check the caller's role in the group first (403), then find the thread, which
is reachable only under its own group (404 elsewhere). Server routes are for administrators,
except those an owner may use, which answer 404 to others so as not to reveal the thread.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from threadsvc.errors import (
    BadParameter,
    Forbidden,
    GroupNotFound,
    ThreadNotFound,
    ThreadStillRunning,
)
from threadsvc.models import (
    SERVER_GROUP_ID,
    Group,
    Level,
    LogEvent,
    LogPage,
    Principal,
    Role,
    Status,
    Thread,
    ThreadFilter,
    ThreadPage,
    now_ms,
)
from threadsvc.runner.registry import Registry
from threadsvc.runner.runner import Runner
from threadsvc.store.base import Store

_THREAD_ID = re.compile(r"[0-9a-f]{32}")
_GROUP_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


def valid_group_name(name: str) -> bool:
    return _GROUP_NAME.fullmatch(name) is not None


@dataclass(frozen=True)
class Scope:
    """Where a request addresses threads: a group, or the server (group None)."""

    group: Group | None

    @property
    def group_id(self) -> int:
        return self.group.id if self.group else SERVER_GROUP_ID


class Service:
    def __init__(self, store: Store, registry: Registry, runner: Runner) -> None:
        self.store = store
        self.registry = registry
        self.runner = runner

    # -- where ------------------------------------------------------------------------------
    async def group(self, ref: str) -> Group:
        """A group by name, or by id when `ref` is purely numeric."""
        group = None
        if ref.isascii() and ref.isdigit() and len(ref) < 19:
            group = await self.store.get_group_by_id(int(ref))
        elif valid_group_name(ref):
            group = await self.store.get_group(ref)
        if group is None:
            raise GroupNotFound(f"No group '{ref[:80]}'")
        return group

    async def _scope(self, who: Principal, group_ref: str | None, minimum: Role) -> Scope:
        if group_ref is None:
            if not who.is_admin:
                raise Forbidden("Only administrators may use this service")
            return Scope(None)
        group = await self.group(group_ref)
        if not who.has_role(group.id, minimum):
            raise Forbidden(f"This needs the role {minimum.label} in group '{group.name}'")
        return Scope(group)

    async def _thread(self, who: Principal, thread_id: str, scope: Scope) -> Thread:
        thread = await self.store.get_thread(thread_id) if _THREAD_ID.fullmatch(thread_id) else None
        if thread is None or (scope.group is not None and thread.group_id != scope.group.id):
            raise ThreadNotFound(f"No thread '{thread_id[:64]}'")
        return thread

    # -- reading ----------------------------------------------------------------------------
    async def list_threads(
        self, who: Principal, group_ref: str | None, query: ThreadFilter
    ) -> ThreadPage:
        scope = await self._scope(who, group_ref, Role.CONTRIBUTOR)
        if scope.group is not None:
            query = _with_group(query, scope.group.id)
        if query.job is not None and query.job not in {spec.name for spec in self.registry}:
            return ThreadPage([], 0, query.page, query.pagesize)  # an unknown type matches nothing
        return await self.store.list_threads(query)

    async def get_thread(self, who: Principal, group_ref: str | None, thread_id: str) -> Thread:
        """The thread for the task resource and progress: reviewers of its group, or (server
        routes) its owner or an administrator."""
        if group_ref is not None:
            scope = await self._scope(who, group_ref, Role.REVIEWER)
            return await self._thread(who, thread_id, scope)
        thread = await self._thread(who, thread_id, Scope(None))
        if not who.is_admin and thread.username != who.username:
            raise ThreadNotFound(f"No thread '{thread_id[:64]}'")
        return thread

    async def logs(
        self,
        who: Principal,
        group_ref: str | None,
        thread_id: str,
        since: int,
        limit: int,
        level: Level,
    ) -> LogPage:
        scope = await self._scope(who, group_ref, Role.CONTRIBUTOR)
        thread = await self._thread(who, thread_id, scope)
        return await self.store.get_logs(thread.id, since, limit, level)

    # -- changing ---------------------------------------------------------------------------
    async def start(
        self,
        who: Principal,
        group_ref: str | None,
        job_name: str,
        fields: Iterable[tuple[str, str]],
    ) -> Thread:
        if group_ref is None and not who.is_admin:
            raise Forbidden("Only administrators may start server-level threads")
        group = await self.group(group_ref) if group_ref is not None else None
        if group is not None and not who.has_role(group.id, Role.REVIEWER):
            raise Forbidden(f"Only members of group '{group.name}' may start threads there")
        spec = self.registry.get(job_name)
        if not spec.scope.allows(server_level=group is None):
            where = "for a group" if group is None else "at server level"
            raise BadParameter("job", f"'{job_name}' cannot run {where}")
        if group is not None and not who.has_role(group.id, spec.role):
            raise Forbidden(f"Job '{job_name}' needs the role {spec.role.label} in '{group.name}'")
        params = spec.parse_params(fields)
        now = now_ms()
        thread = Thread(
            id=secrets.token_hex(16),
            name=spec.thread_name(group),
            username=who.username,
            group_id=group.id if group else SERVER_GROUP_ID,
            job=spec.name,
            params=params,
            status=Status.INITIALISED,
            created=now,
            version=1,
        )
        first = LogEvent(1, now, Level.INFO, f"Status: initialised (job {spec.name}, by {who.username})")
        await self.store.insert_thread(thread, first)
        self.runner.wake()
        return thread

    async def cancel(self, who: Principal, group_ref: str | None, thread_id: str) -> Thread | None:
        """The thread as it stands after the request; None when there is no such thread here."""
        scope = await self._scope(who, group_ref, Role.CONTRIBUTOR)
        try:
            thread = await self._thread(who, thread_id, scope)
        except ThreadNotFound:
            return None
        if thread.status is Status.INITIALISED:
            message = f"Cancelled by {who.username}"
            event = LogEvent(0, now_ms(), Level.INFO, f"Status: cancelled: {message}")
            done = await self.store.cancel_initialised(thread.id, message, event)
            if done is not None:
                return done
            thread = await self._thread(who, thread_id, scope)  # claimed meanwhile: running
        if not thread.final:
            await self.store.request_cancel(thread.id)
            await self.runner.cancel(thread.id, who.username)
            thread = await self._thread(who, thread_id, scope)
        return thread

    async def delete(self, who: Principal, group_ref: str | None, thread_id: str) -> None:
        scope = await self._scope(who, group_ref, Role.MANAGER)
        thread = await self._thread(who, thread_id, scope)
        if not thread.final:
            raise ThreadStillRunning(f"Thread '{thread.id}' is {thread.status.value}; cancel it first")
        if not await self.store.delete_thread(thread.id):
            raise ThreadNotFound(f"No thread '{thread_id}'")


def _with_group(query: ThreadFilter, group_id: int) -> ThreadFilter:
    return dataclasses.replace(query, group_id=group_id)
