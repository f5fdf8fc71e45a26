"""A thread list as SQL: the filter_* fragments of its WHERE clause, its order_* fragment when
it is not newest first, and whether the counts that triggers keep (thread_counts) can answer
for its total instead of counting rows.

Search text reaches SQL only as a bound LIKE pattern whose own `%`, `_` and `\\` are escaped:
a search is a substring match, never a pattern the caller writes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from threadsvc.models import Status, ThreadFilter

ALL_STATUSES = frozenset(Status)
_FILTERS = {
    "group_id": "filter_group",
    "username": "filter_username",
    "job": "filter_job",
    "since": "filter_since",
    "until": "filter_until",
    "deletion_before": "filter_deletion_before",
    "id_prefix": "filter_id_prefix",
    "name": "filter_name",
    "text": "filter_text",
    "ended_since": "filter_ended_since",
    "ended_until": "filter_ended_until",
}
_LIKE = ("name", "text")  # substring searches, letter case aside
_COUNTED = frozenset({"group_id"})  # the filters that thread_counts can total, with statuses

# A named query, its arguments, and the names of the fragments that fill its `{where}`.
Named = tuple[str, dict[str, Any], Sequence[str]]


def statement(queries: Mapping[str, str], name: str, where: Sequence[str] | None) -> str:
    """The SQL of query `name`, its `{where}` (if any) the filter fragments named, ANDed, and
    its `{order}` the order_* fragment named among them."""
    sql = queries[name]
    if where is None:
        return sql
    filters = [part for part in where if not part.startswith("order_")]
    order = [queries[part] for part in where if part.startswith("order_")]
    return sql.format(
        where=" AND ".join(f"({queries[part]})" for part in filters) or "1 = 1",
        order=order[0] if order else "seq DESC",
    )


def like(text: str) -> str:
    """A LIKE pattern matching `text` anywhere (lowercase, as the filters compare it)."""
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


@dataclass(frozen=True, slots=True)
class ListQuery:
    """A list's WHERE fragments and their arguments, and whether thread_counts can answer."""

    where: tuple[str, ...]
    args: dict[str, Any]
    counted: bool
    limit: int
    offset: int
    order: str | None = None  # the order_* fragment, when not newest first

    def counts(self) -> Named:
        """locate_page, when `counted`: the total, and the bucket where the page starts."""
        return "locate_page", {**self.args, "offset": self.offset}, self.where

    def rows(self, bucket: int | None = None, newer: int = 0) -> Named:
        """list_threads, skipping the buckets above `bucket` (and the `newer` threads they
        hold) rather than counting through them; in another order, list_threads_sorted."""
        where, args = self.where, {**self.args, "limit": self.limit, "offset": self.offset}
        if self.order is not None:
            return "list_threads_sorted", args, (*where, self.order)
        if bucket is not None:
            where = (*where, "filter_below_bucket")
            args.update(bucket=bucket, offset=self.offset - newer)
        return "list_threads", args, where

    def total(self) -> Named:
        """count_threads, when not `counted`."""
        return "count_threads", self.args, self.where


def list_query(query: ThreadFilter, statuses: Any) -> ListQuery:
    """`statuses`: the dialect's form of the statuses argument, used unless every status is
    asked for (then the clause leaves status out, so that an index without it serves)."""
    where, args, counted = [], {}, True
    if query.statuses != ALL_STATUSES:
        where.append("filter_statuses")
        args["statuses"] = statuses
    for name, fragment in _FILTERS.items():
        value = getattr(query, name)
        if value is not None:
            where.append(fragment)
            args[name] = like(value) if name in _LIKE else value
            counted = counted and name in _COUNTED
    if query.id_prefix is not None:  # ids are lowercase hex: every one so begun sorts below
        args["id_prefix_end"] = query.id_prefix + "g"
    order = None
    if query.sort != "created" or not query.descending:
        # The total still comes from thread_counts when it can; the rows then skip by offset.
        order = f"order_{query.sort}_{'desc' if query.descending else 'asc'}"
    offset = (query.page - 1) * query.pagesize
    return ListQuery(tuple(where), args, counted, query.pagesize, offset, order)
