"""The audit log's page, for administrators: the same `Service.audit` as GET /ps/service/audit
(which refuses anyone else), with its filters: a user (who acted, or was acted on), an action,
and a day to read from.

Without a moment to read from, the page shows the latest entries, newest first, and older ones a
page at a time (`before`, an entry's id); from a moment, the entries from there on, oldest
first, a page at a time (`since`), as the API pages.

Threat model: the query string is anyone's text: each filter is parsed by the API's own
parsers (web/params.py), and a bad one is said on the page above the form, which keeps what
was typed; entries hold text from anyone (a name tried at sign-in), escaped by Jinja.
"""

from __future__ import annotations

import dataclasses
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from threadsvc.errors import BadParameter
from threadsvc.models import AUDIT_ACTIONS, AuditFilter
from threadsvc.web import params
from threadsvc.web.console.pages import page, viewer
from threadsvc.web.console.people import ADMIN, show

PAGESIZE = 50


@page
async def audit(request: Request) -> Response:
    state, who = await viewer(request)
    q = request.query_params
    typed = {"user": q.get("user", "")[:200], "action": q.get("action", "")[:40],
             "from": q.get("from", "")[:40]}
    context: dict[str, Any] = {"typed": typed, "actions": sorted(AUDIT_ACTIONS), "error": None,
                               "error_field": None, "next": None, "latest": None}
    try:
        since = params.integer("since", q.get("since"), 0, 0, 10**15)
        before = params.integer("before", q.get("before"), 0, 0, 10**15)
        query = AuditFilter(
            since=since, limit=PAGESIZE,
            action=params.audit_action(typed["action"] or None),
            user=params.text("user", typed["user"] or None),
            from_ts=params.timestamp("from", typed["from"] or None),
        )
    except BadParameter as exc:
        await state.service.audit(who, AuditFilter(limit=1))  # only administrators learn more
        context.update(error=str(exc), error_field=exc.name, entries=[], mode="none")
        return show(request, "admin_audit.html", context, 400)
    kept = {k: v for k, v in typed.items() if v}
    latest = since == 0 and query.from_ts is None
    if latest:  # newest first, and older pages below the oldest shown
        query = dataclasses.replace(query, latest=True, before=before or None)
    found = await state.service.audit(who, query)
    entries = found.entries
    if latest:
        entries = list(reversed(entries))
        if found.older:
            context["next"] = f"{ADMIN}/audit?" + urlencode({**kept, "before": entries[-1].id})
    elif found.more:
        context["next"] = f"{ADMIN}/audit?" + urlencode({**kept, "since": found.next})
    if not latest or before:
        context["latest"] = f"{ADMIN}/audit?" + urlencode(
            {k: v for k, v in kept.items() if k != "from"})
    context.update(entries=entries, mode="latest" if latest else "from")
    return show(request, "admin_audit.html", context)
