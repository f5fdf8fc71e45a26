"""Export and import of a whole store (`threadsvc export | threadsvc import`, threadsvc/transfer.py),
written once over the dialect primitives: each carried table read a page at a time in key
order, and written back with every column as it was, ids included.

An import goes only into an empty store. It cannot be one transaction (a dump may be far larger
than memory, and SQLite's rules never wait for input), so it is restartable instead: its first
transaction checks that the store is empty and marks it, under the `files` setting, as being
imported into (a node refuses to start on such a store, files/migrate.check_recorded); only its
last transaction, once everything is written, records the file storage. Run again on a store
so marked, an import first removes what the interrupted one wrote.

Threat model: rows come from a dump the operator made, which may be damaged; the caller
(threadsvc/transfer.py) checks each row's columns are exactly the table's, and every value
reaches SQL as a bound parameter.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from threadsvc.errors import Conflict
from threadsvc.models import Level, LogEvent, NewLogEvent
from threadsvc.store.dialect import Row, Transactions, Tx

FILES_SETTING = "files"  # as files/migrate.SETTING: where the store's files are
IMPORTING = "importing"  # its value while an import runs (no storage is called so)


@dataclass(frozen=True)
class Table:
    """A table an export carries: its columns, its key (the order pages are read in, and
    where the first page starts) and those of its columns that are flags."""

    name: str
    columns: tuple[str, ...]
    key: tuple[str, ...]
    first: tuple[Any, ...]  # below every key (ids are positive, no text key is empty)
    flags: tuple[str, ...] = ()


# In the order an import writes them: every row's references come before it.
TABLES = (
    Table("server_settings", ("key", "value"), ("key",), ("",)),
    Table("users", ("id", "username", "password_hash", "is_admin", "created", "disabled",
                    "credential_version"), ("id",), (0,), ("is_admin", "disabled")),
    Table("groups", ("id", "name"), ("id",), (0,)),
    Table("memberships", ("group_id", "user_id", "role"), ("user_id", "group_id"), (0, 0)),
    Table("api_tokens", ("token_hash", "user_id", "created"), ("token_hash",), ("",)),
    Table("oauth_clients", ("client_id", "user_id", "secret_hash", "created"), ("client_id",),
          ("",)),
    Table("threads", (
        "seq", "id", "name", "username", "group_id", "job", "params", "status", "created",
        "started", "ended", "message", "progress_current", "progress_total", "warnings",
        "errors", "node", "heartbeat", "cancel_requested", "version", "idempotency_key",
        "result_file", "result_type", "result_size", "result_name", "result_deletion",
        "request_hash",
    ), ("seq",), (0,), ("cancel_requested",)),
    Table("log_events", ("thread_id", "seq", "ts", "level", "text"), ("thread_id", "seq"),
          ("", -1)),
    Table("webhooks", ("id", "group_id", "url", "secret", "events", "created_by", "created",
                       "failures", "paused_until"), ("id",), (0,)),
    Table("schedule_ticks", ("name", "tick", "node", "claimed", "thread_id", "outcome"),
          ("name", "tick"), ("", -(2**63))),
    Table("audit_log", ("id", "ts", "actor", "action", "target", "group_name", "address",
                        "detail"), ("id",), (0,)),
    Table("paused_jobs", ("job", "paused", "actor"), ("job",), ("",)),  # a pause moves too
)
TABLES_BY_NAME = {table.name: table for table in TABLES}
# Server settings that say where or how this store keeps things, not what it holds: the file
# storage (the import records its own), the marker of a shared data-dir (files/shared.py: made
# again by the first node) and SQLite's highest removed user id (carried as `user_id_high`).
LOCAL_SETTINGS = frozenset({FILES_SETTING, "files-shared-marker", "removed-user-id"})


class TransferRules(Transactions):
    async def export_page(self, table: Table, after: Sequence[Any], limit: int) -> list[Row]:
        """Up to `limit` rows of `table` whose key is above `after`, in key order; flags as
        booleans, whichever way the dialect keeps them."""
        args = {"limit": limit, **dict(zip(("after_a", "after_b"), after, strict=False))}

        async def do(tx: Tx) -> list[Row]:
            rows = await tx.all(f"export_{table.name}", args)
            if not table.flags:
                return rows
            return [{**row, **{flag: bool(row[flag]) for flag in table.flags}} for row in rows]

        return await self._read(do)

    async def user_id_high(self) -> int:
        """The highest id any user of this store had, removed users included."""
        return int(await self._read(lambda tx: tx.value("user_id_high")))

    async def begin_import(self) -> bool:
        """Mark the store as being imported into, if it is empty. A store an earlier import
        left marked is emptied first (True then). Raises Conflict, changing nothing, when the
        store holds users, groups, threads, webhooks, schedules' ticks, audit entries or paused
        jobs."""
        async def do(tx: Tx) -> bool:
            marked = await tx.one("get_setting", {"key": FILES_SETTING})
            restarted = marked is not None and marked["value"] == IMPORTING
            if restarted:
                for table in reversed(TABLES):
                    await tx.run(f"wipe_{table.name}")
            elif await tx.value("transfer_occupied"):
                raise Conflict(
                    "the store is not empty: import only into a new store (nothing was written)"
                )
            await tx.run("put_setting", {"key": FILES_SETTING, "value": IMPORTING})
            return restarted

        return await self._write(do)

    async def import_rows(self, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
        """Write rows of `table` (each with exactly its columns), in one transaction."""
        if not rows:
            return
        if table.name == "log_events":  # the batch write of logs (COPY on PostgreSQL)
            events = [NewLogEvent(row["thread_id"], LogEvent(row["seq"], row["ts"],
                                                             Level(row["level"]), row["text"]))
                      for row in rows]
            await self._write(lambda tx: tx.insert_events(events))
        else:
            await self._write(lambda tx: tx.many(f"import_{table.name}", rows))

    async def finish_import(self, files_kind: str, user_id_high: int) -> None:
        """Record the file storage the files were imported into, which lets nodes start, and
        have new ids follow the imported ones (a user's, also those of removed users)."""
        async def do(tx: Tx) -> None:
            await tx.run("reset_ids", {"user_high": user_id_high})
            await tx.run("put_setting", {"key": FILES_SETTING, "value": files_kind})

        await self._write(do)
