"""A thread list as SQL: the filter_* fragments of its WHERE clause, and whether the counts that
triggers keep (thread_counts) can answer for its total instead of counting rows."""

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
}
_COUNTED = frozenset({"group_id"})  # the filters that thread_counts can total, with statuses

# A named query, its arguments, and the names of the fragments that fill its `{where}`.
Named = tuple[str, dict[str, Any], Sequence[str]]


def statement(queries: Mapping[str, str], name: str, where: Sequence[str] | None) -> str:
    """The SQL of query `name`, its `{where}` (if any) the fragments named, ANDed."""
    sql = queries[name]
    if where is None:
        return sql
    return sql.format(where=" AND ".join(f"({queries[part]})" for part in where) or "1 = 1")


@dataclass(frozen=True, slots=True)
class ListQuery:
    """A list's WHERE fragments and their arguments, and whether thread_counts can answer."""

    where: tuple[str, ...]
    args: dict[str, Any]
    counted: bool
    limit: int
    offset: int

    def counts(self) -> Named:
        """locate_page, when `counted`: the total, and the bucket where the page starts."""
        return "locate_page", {**self.args, "offset": self.offset}, self.where

    def rows(self, bucket: int | None = None, newer: int = 0) -> Named:
        """list_threads, skipping the buckets above `bucket` (and the `newer` threads they
        hold) rather than counting through them."""
        where, args = self.where, {**self.args, "limit": self.limit, "offset": self.offset}
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
            args[name] = value
            counted = counted and name in _COUNTED
    offset = (query.page - 1) * query.pagesize
    return ListQuery(tuple(where), args, counted, query.pagesize, offset)
