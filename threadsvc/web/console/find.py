"""Opening a thread by its id alone (the form on the groups page and on a member's own list).

Threat model: the id is typed by the user; it is checked (32 hex digits) before the store is
asked, and Service.find_thread decides where, if anywhere, this user may open the thread: a
thread they may not see is "not found", exactly like one that does not exist, so the form
tells nothing about other groups' threads.
"""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import Response

from threadsvc.errors import ThreadNotFound
from threadsvc.web.console.pages import page, render, see_other, ui_base, viewer

THREAD_ID = re.compile(r"[0-9a-fA-F]{32}")


@page
async def find_thread(request: Request) -> Response:
    state, who = await viewer(request)
    typed = request.query_params.get("id", "")
    value = typed.strip()
    if not THREAD_ID.fullmatch(value):
        problem = "A thread id is 32 hexadecimal digits (as in a thread page's address)."
        return _again(request, typed, problem, 400)
    try:
        thread, group = await state.service.find_thread(who, value)
    except ThreadNotFound:
        return _again(request, typed, "No thread with this id that you may open.", 404)
    return see_other(f"{ui_base(group.name if group else None)}/threads/{thread.id}")


def _again(request: Request, typed: str, problem: str, status: int) -> Response:
    return render(request, "find.html", {"value": typed[:64], "errors": {"id": problem}}, status)
