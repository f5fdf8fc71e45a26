"""The dashboard (administrators; managers for the groups they manage) and the controls on it
(administrators): pause and resume a job, a node's max-running, drain and undrain a node.

Every figure comes from `Service.dashboard` and every control goes through the `Service` method
the HTTP services call, which decide who may; the page only shows a control when
`Service.may_control` says the viewer may use it. Pausing a job and draining a node ask for
confirmation first (a page with the form again, so it works without JavaScript); every form
carries the session's CSRF token (`poster`).

Threat model: `window` comes from the query and the forms' fields from the viewer: a bad one
is answered on the page, the form kept; names and numbers are checked by threadsvc/controls.py,
and every value is escaped by the templates. Notices after a redirect are chosen by key,
never text from the query.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from threadsvc.controls import checked_name
from threadsvc.errors import BadParameter
from threadsvc.models import Principal, Status, now_ms
from threadsvc.state import AppState
from threadsvc.store.dashboard import Figures
from threadsvc.web.console import charts
from threadsvc.web.console.pages import UI, page, poster, render, see_other, viewer

HERE = f"{UI}/dashboard"
MINUTE = 60_000


@dataclass(frozen=True)
class Window:
    label: str
    buckets: int
    width: int  # ms a bucket
    per: str  # what a bar counts


WINDOWS = {
    "hour": Window("the last hour", 60, MINUTE, "per minute"),
    "day": Window("the last day", 96, 15 * MINUTE, "per 15 minutes"),
}
DONE = {  # ?done=KEY after a control
    "paused": "The job is paused: no node starts its waiting threads until it is resumed.",
    "already-paused": "The job was paused already: nothing changed.",
    "resumed": "The job is resumed: its waiting threads will be started.",
    "max-running": "The node takes its new max-running within a few seconds.",
    "draining": "The node claims nothing more; it is empty once its running threads end.",
    "undrained": "The node claims threads again.",
}
FINISHED = (Status.COMPLETED, Status.FAILED, Status.CANCELLED)


@page
async def dashboard(request: Request) -> Response:
    state, who = await viewer(request)
    raw = request.query_params.get("window", "hour")
    errors: dict[str, str] = {}
    if raw not in WINDOWS:
        errors["window"] = "Choose the last hour or the last day."
        raw = "hour"
    return await _page(request, state, who, raw, errors, {}, 400 if errors else 200)


async def _page(request: Request, state: AppState, who: Principal, window_key: str,
                errors: dict[str, str], typed: dict[str, str], status_code: int) -> Response:
    window = WINDOWS[window_key]
    now = now_ms()
    since = (now // window.width + 1 - window.buckets) * window.width  # the last bar holds now
    figures = await state.service.dashboard(who, since, window.width, window.buckets)
    context: dict[str, Any] = {
        "nav": "dashboard",
        "window_key": window_key,
        "windows": WINDOWS,
        "window": window,
        "figures": figures,
        "now": now,
        "created_chart": charts.bars(
            "created", f"Threads created {window.per}, {window.label}",
            [charts.Series("inprogress", figures.created)], since, window.width),
        "ended_chart": charts.bars(
            "ended", f"Threads finished {window.per} by status, {window.label}",
            [charts.Series(s.value, figures.ended[s]) for s in FINISHED], since, window.width),
        "rows": _rows(figures, since, window.width),
        "finished": FINISHED,
        "done": DONE.get(request.query_params.get("done", "")),
        "errors": errors,
        "typed": typed,
        "controls": state.service.may_control(who),
        "manager_view": not who.is_admin,
        "duration": duration,
    }
    if context["controls"]:
        paused = await state.service.paused_jobs(who)
        paused_names = {p.job for p in paused}
        context.update(
            nodes=await state.service.nodes(who),
            here=state.runner.node,
            paused=paused,
            pausable=sorted(spec.name for spec in state.service.registry if spec.name not in paused_names),
        )
    return render(request, "dashboard.html", context, status_code)


def duration(ms: int) -> str:
    """A duration for people: 420 ms, 3.5 s, 4 min 10 s, 2 h 5 min."""
    if ms < 1000:
        return f"{ms} ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def _rows(figures: Figures, since: int, width: int) -> list[dict[str, int]]:
    """The charts' numbers as table rows, the buckets that had something only."""
    rows = []
    for i in range(figures.buckets):
        ended = {s.value: figures.ended[s][i] for s in FINISHED}
        if figures.created[i] or any(ended.values()):
            rows.append({"start": since + i * width, "created": figures.created[i], **ended})
    return rows


async def _form(request: Request) -> tuple[AppState, Principal, dict[str, str]]:
    async with request.form(max_files=0, max_fields=10) as form:
        state, who = await poster(request, form)
        values = {k: v[:300] for k, v in form.multi_items() if isinstance(v, str)}
    return state, who, values


def _confirm(request: Request, action: str, values: dict[str, str], **context: Any) -> Response:
    """The confirmation step: the same form again, with `confirm`."""
    return render(request, "confirm_control.html",
                  {"nav": "dashboard", "action": action, "values": values, **context})


async def _refused(request: Request, state: AppState, who: Principal, key: str,
                   exc: BadParameter, values: dict[str, str]) -> Response:
    """The dashboard again, with the service's message by the form it concerns (400)."""
    return await _page(request, state, who, "hour", {key: str(exc)}, values, 400)


@page
async def pause(request: Request) -> Response:
    state, who, values = await _form(request)
    job = values.get("job", "")
    try:
        if values.get("confirm") != "yes":
            state.service.controller(who)  # no confirmation page for those who may not
            checked_name("job", job)
            return _confirm(request, "pause", values, job=job)
        changed = await state.service.pause_job(who, job)
    except BadParameter as exc:
        return await _refused(request, state, who, "pause", exc, values)
    return see_other(f"{HERE}?done={'paused' if changed else 'already-paused'}")


@page
async def resume(request: Request) -> Response:
    state, who, values = await _form(request)
    try:
        await state.service.pause_job(who, values.get("job", ""), paused=False)
    except BadParameter as exc:
        return await _refused(request, state, who, "control", exc, values)
    return see_other(f"{HERE}?done=resumed")


@page
async def max_running(request: Request) -> Response:
    state, who, values = await _form(request)
    node = values.get("node", "")
    try:
        await state.service.set_max_running(who, node, values.get("value", "").strip())
    except BadParameter as exc:
        known = {n.name for n in await state.service.nodes(who)}
        key = f"node:{node}" if node in known else "control"
        return await _refused(request, state, who, key, exc, values)
    return see_other(f"{HERE}?done=max-running")


@page
async def drain(request: Request) -> Response:
    state, who, values = await _form(request)
    node = values.get("node", "")
    try:
        if values.get("confirm") != "yes":
            if node not in {n.name for n in await state.service.nodes(who)}:
                raise BadParameter("node", "names no node that has run with this store")
            return _confirm(request, "drain", values, node=node)
        await state.service.drain(who, node)
    except BadParameter as exc:
        return await _refused(request, state, who, "control", exc, values)
    return see_other(f"{HERE}?done=draining")


@page
async def undrain(request: Request) -> Response:
    state, who, values = await _form(request)
    try:
        await state.service.drain(who, values.get("node", ""), draining=False)
    except BadParameter as exc:
        return await _refused(request, state, who, "control", exc, values)
    return see_other(f"{HERE}?done=undrained")
