"""Opening a thread by its id alone (the form on the groups page and on a member's own list).

Threat model: the id is typed by the user; Service.find_thread checks it (a whole id, or at
least its first 8 hexadecimal characters) before the store is asked, and decides where, if
anywhere, this user may open the thread: a thread they may not see is "not found", exactly
like one that does not exist, and only threads they may open count when the start of an id
matches several, so the form tells nothing about other groups' threads.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from threadsvc.errors import BadParameter, ThreadNotFound
from threadsvc.web.console.pages import page, render, see_other, ui_base, viewer


@page
async def find_thread(request: Request) -> Response:
    state, who = await viewer(request)
    typed = request.query_params.get("id", "")
    try:
        thread, group = await state.service.find_thread(who, typed)
    except BadParameter as exc:
        return _again(request, typed, f"The id {_problem(exc)}.", 400)
    except ThreadNotFound:
        return _again(request, typed, "No thread with this id that you may open.", 404)
    return see_other(f"{ui_base(group.name if group else None)}/threads/{thread.id}")


def _problem(exc: BadParameter) -> str:
    return str(exc).removeprefix(f"Parameter '{exc.name}' ")


def _again(request: Request, typed: str, problem: str, status: int) -> Response:
    return render(request, "find.html", {"value": typed[:64], "errors": {"id": problem}}, status)
