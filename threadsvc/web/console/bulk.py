"""Acting on many threads from a list: cancel them, or delete ended ones, either those ticked
or all that match the list's search; first a page that says how many and asks to confirm.

Each thread goes through the same Service method as the API's (`cancel`, `delete`), with the
signed-in user, so each is allowed, refused and audited (one audit entry per thread, written
by the store in the change's transaction) exactly as one API call would be.

Threat model: both steps are CSRF-checked POSTs (a cross-site page cannot make a user act,
nor show a confirmation that a click would send); a GET never acts. The ids come from the
form: each must be a thread id, at most BULK_MAX of them, and each is checked by the service
against the list's group (a thread of another group is not found there). "All matching" is
read into ids on the confirmation page, with the search the list showed: what is confirmed
is what is done, never a wider set found later.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response

from threadsvc.errors import BadParameter, NotFound, ThreadStillRunning
from threadsvc.models import ACTIVE, FINAL, Principal, Status
from threadsvc.state import AppState
from threadsvc.web.console.finding import FIELDS, Search, read_search
from threadsvc.web.console.pages import page, poster, render, see_other, ui_base

BULK_MAX = 1000  # threads one confirmation may name
ACTIONS = {"cancel": "Cancel", "delete": "Delete"}
_ID = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class Outcome:
    """What a bulk action did: how many threads it changed and why it left the others."""

    action: str
    done: int
    ended: int = 0  # cancel: had ended already
    running: int = 0  # delete: had not ended
    gone: int = 0  # neither: no longer there

    def text(self) -> str:
        verb = "Cancelled" if self.action == "cancel" else "Deleted"
        said = [f"{verb} {self.done} thread{'s' if self.done != 1 else ''}."]
        if self.ended:
            said.append(f"{self.ended} had already ended.")
        if self.running:
            said.append(f"{self.running} had not ended and were left (cancel them first).")
        if self.gone:
            said.append(f"{self.gone} no longer existed.")
        return " ".join(said)


def outcome_of(query: dict[str, str]) -> Outcome | None:
    """The outcome a redirect carries (whole numbers only; no text from the query)."""
    action = query.get("bulk")
    if action not in ACTIONS:
        return None
    counts = {}
    for name in ("done", "ended", "running", "gone"):
        raw = query.get(name, "0")
        counts[name] = int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 7 else 0
    return Outcome(action, **counts)


def list_path(ref: str | None, where: str) -> str:
    """The list a form came from: a group's, the server's, or the queue."""
    if ref is None and where == "queue":
        return f"{ui_base(None)}/queue"
    return f"{ui_base(ref)}/threads"


@page
async def bulk(request: Request) -> Response:
    """POST {list}/bulk: without `confirmed`, the confirmation page; with it, the action."""
    async with request.form(max_files=0, max_fields=BULK_MAX + 40) as form:
        state, who = await poster(request, form)
        ref = request.path_params.get("group")
        action = str(form.get("action") or "")
        if action not in ACTIONS:
            raise BadParameter("action", "must be cancel or delete")
        back = list_path(ref, str(form.get("list") or ""))
        values = {name: str(form.get(name) or "") for name in FIELDS}
        search = read_search(values, status="initialised" if back.endswith("/queue") else None)
        ids = await _ids(state, who, ref, form, action, search)
        if form.get("confirmed") != "yes":
            return render(request, "bulk_confirm.html", {
                "action": action, "verb": ACTIONS[action], "ids": ids[0], "more": ids[1],
                "values": search.values, "back": search.link(back), "list": form.get("list"),
                "base": ui_base(ref), "nav": "threads" if ref is None else "groups",
            })
    outcome = await _act(state, who, ref, action, ids[0])
    there = search.link(back)
    joiner = "&" if "?" in there else "?"
    counts = "&".join(f"{k}={getattr(outcome, k)}" for k in ("done", "ended", "running", "gone"))
    return see_other(f"{there}{joiner}bulk={action}&{counts}")


async def _ids(
    state: AppState, who: Principal, ref: str | None, form: FormData, action: str,
    search: Search,
) -> tuple[list[str], int]:
    """The ids the action is for, and how many more matched than one confirmation takes."""
    if form.get("scope") == "matching":
        if search.query is None:
            raise BadParameter("search", "has a bad value: correct it on the list first")
        wanted = ACTIVE if action == "cancel" else FINAL  # those the action can apply to
        statuses = frozenset(search.query.statuses & wanted)
        if not statuses:
            return [], 0
        query = dataclasses.replace(search.query, statuses=statuses, page=1, pagesize=BULK_MAX)
        found = await state.service.list_threads(who, ref, query)
        return [t.id for t in found.threads], max(0, found.total - BULK_MAX)
    ids = [str(v) for v in form.getlist("id")]
    if len(ids) > BULK_MAX or not all(_ID.fullmatch(i) for i in ids):
        raise BadParameter("id", f"must be at most {BULK_MAX} thread ids")
    return list(dict.fromkeys(ids)), 0


async def _act(
    state: AppState, who: Principal, ref: str | None, action: str, ids: list[str],
) -> Outcome:
    done = ended = running = gone = 0
    for thread_id in ids:
        if action == "cancel":
            thread = await state.service.cancel(who, ref, thread_id)
            if thread is None:
                gone += 1
            elif thread.status is Status.CANCELLED or not thread.final:
                done += 1  # cancelled, or asked to stop (it ends as soon as it can)
            else:
                ended += 1
            continue
        try:
            await state.service.delete(who, ref, thread_id)
            done += 1
        except ThreadStillRunning:
            running += 1
        except NotFound:
            gone += 1
    return Outcome(action, done, ended, running, gone)
