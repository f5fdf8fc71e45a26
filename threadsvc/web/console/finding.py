"""Finding threads on the list pages: the search form's fields read into the one ThreadFilter
that Service.list_threads takes (the API's list reads the same parameters, web/params.py),
and each bad value kept and named on the page rather than answered with an error page.

Threat model: every field is query text. Each goes through web/params (control characters,
lengths, the id's hex digits, the sort's names), so what reaches the store is a bound value
or one of the store's own order fragments; a bad field is shown back escaped (Jinja) and the
list is not read with the rest, so a list or a bulk action never works on a filter other
than the one the form says.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from starlette.datastructures import ImmutableMultiDict

from threadsvc.errors import BadParameter
from threadsvc.identity import LONGEST_NAME
from threadsvc.models import SORTS, ThreadFilter
from threadsvc.web import params

PAGESIZES = (10, 25, 50, 100)
DEFAULT_PAGESIZE = 25
STATUS_FILTERS = ("all", "active", "finished", "initialised", "inprogress", "warning",
                  "error", "completed", "failed", "cancelled")
# The fields of the form, in the query as the page sends them (and as links keep them).
FIELDS = ("q", "in", "status", "user", "job", "created-from", "created-to", "ended-from", "ended-to",
          "sort", "order", "pagesize")
SEARCH_IN = ("any", "name", "message", "id")
LABELS = {"q": "Search", "in": "Look in", "status": "Status", "user": "User", "job": "Job",
          "created-from": "Created from", "created-to": "Created to",
          "ended-from": "Ended from", "ended-to": "Ended to", "sort": "Sort by",
          "order": "Order", "pagesize": "Per page", "page": "Page"}
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_DAY_MS = 86_400_000


@dataclass
class Search:
    """A list's search as the form has it: the raw values, the filter made of them, and the
    bad ones with what is wrong (then `query` is None: nothing is listed)."""

    values: dict[str, str]
    query: ThreadFilter | None
    problems: dict[str, str] = field(default_factory=dict)

    def link(self, path: str, page: int = 1) -> str:
        """This search on `path` (page `page`), with the fields that differ from the defaults."""
        query = {k: v for k, v in self.values.items()
                 if v and v != DEFAULTS.get(k) and k != "page"}
        if page > 1:
            query["page"] = str(page)
        return f"{path}?{urlencode(query)}" if query else path

    @property
    def narrowed(self) -> bool:
        """Whether any field differs from the defaults (the form offers to clear it)."""
        return any(v and v != DEFAULTS.get(k) and k != "page" for k, v in self.values.items())


DEFAULTS = {"in": "any", "status": "all", "sort": "created", "order": "desc",
            "pagesize": str(DEFAULT_PAGESIZE)}


def read_search(
    q: ImmutableMultiDict[str, str] | dict[str, str], *, status: str | None = None,
) -> Search:
    """The search of a list page's query. `status`: fixed by the page (the queue)."""
    values = {name: (q.get(name) or "").strip(" ")[:400] for name in FIELDS}
    values["page"] = (q.get("page") or "").strip(" ")[:20]
    if status is not None:
        values["status"] = status
    values = {k: v or DEFAULTS.get(k, "") for k, v in values.items()}
    problems: dict[str, str] = {}

    def check(name: str, read: Callable[[], Any]) -> Any:
        try:
            return read()
        except BadParameter as exc:  # "Parameter 'x' must be …": the field names itself
            problems[name] = str(exc).split("' ", 1)[-1]
            return None

    text, where = values["q"], values["in"]
    # One box, and where to look: by default a run of 8 to 32 hex digits is a thread id (or
    # its start, as lists show it) and anything else is looked for in names.
    id_prefix = name = message = None
    if where not in SEARCH_IN:
        problems["in"] = f"must be one of {', '.join(SEARCH_IN)}"
    elif where == "id" or (where == "any" and re.fullmatch(r"[0-9a-fA-F]{8,32}", text)):
        id_prefix = check("q", lambda: params.id_prefix(text))
    elif where == "message":
        message = check("q", lambda: params.search("q", text))
    else:
        name = check("q", lambda: params.search("q", text))
    statuses = check("status", lambda: params.statuses(values["status"]))
    created_from = check("created-from", lambda: _moment("created-from", values, False))
    created_to = check("created-to", lambda: _moment("created-to", values, True))
    ended_from = check("ended-from", lambda: _moment("ended-from", values, False))
    ended_to = check("ended-to", lambda: _moment("ended-to", values, True))
    sort = check("sort", lambda: params.sort(values["sort"]))
    descending = check("order", lambda: params.descending(values["order"]))
    pagesize = check("pagesize", lambda: _pagesize(values["pagesize"]))
    page = check("page", lambda: params.integer("page", values["page"], 1, 1, 10**9))
    user = check("user", lambda: params.text("user", values["user"]))
    if user is not None and len(user) > LONGEST_NAME:
        problems["user"] = f"is longer than {LONGEST_NAME} characters: no user has such a name"
    job = check("job", lambda: params.text("job", values["job"]))
    if problems:
        return Search(values, None, problems)
    query = ThreadFilter(
        statuses=statuses,
        username=user, job=job, id_prefix=id_prefix, name=name, text=message,
        since=created_from, until=created_to, ended_since=ended_from, ended_until=ended_to,
        sort=sort or "created", descending=descending is not False,
        page=page or 1, pagesize=pagesize or DEFAULT_PAGESIZE,
    )
    return Search(values, query)


def _moment(name: str, values: dict[str, str], end_of_day: bool) -> int | None:
    """A date (the whole day, UTC: from its first or to its last millisecond) or a moment."""
    raw = values[name]
    found = params.timestamp(name, raw)
    if found is not None and end_of_day and _DATE.fullmatch(raw):
        return found + _DAY_MS - 1
    return found


def _pagesize(raw: str) -> int:
    value = params.integer("pagesize", raw, DEFAULT_PAGESIZE, 1, max(PAGESIZES))
    if value not in PAGESIZES:
        raise BadParameter("pagesize", f"must be one of {', '.join(map(str, PAGESIZES))}")
    return value


def sort_choices() -> list[tuple[str, str]]:
    return [(s, {"created": "Created", "ended": "Ended", "duration": "Duration"}[s])
            for s in SORTS]
