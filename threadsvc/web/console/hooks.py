"""The administration pages for webhooks: a group's (or, for administrators, the server's)
webhooks, one webhook with its recent deliveries, registering and deleting. Each calls the
same WebhookService as `/ps/service/…/webhooks`, whose rule (a manager of the group; an
administrator for the server's) is the only one asked.

Threat model: as the other administration pages (people.py): any field from the signed-in
viewer, refused by the service when they may not; the address checked by the service as on the
API (no private address unless the setting allows it); the secret is never shown again, nor put
back into the form when the service refuses it; deleting asks first, without JavaScript.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from threadsvc.errors import BadParameter, TooManyWebhooks
from threadsvc.models import Principal
from threadsvc.state import AppState
from threadsvc.web.console.pages import page, see_other, viewer
from threadsvc.web.console.people import ADMIN, confirm, read_form, show, text


def _where(request: Request) -> tuple[str | None, str]:
    """The group (None: the server's webhooks) and the pages' base path."""
    group: str | None = request.path_params.get("group")
    return group, (f"{ADMIN}/groups/{group}/webhooks" if group else f"{ADMIN}/webhooks")


@page
async def webhooks(request: Request) -> Response:
    state, who = await viewer(request)
    return await _list(request, state, who, {}, None)


async def _list(request: Request, state: AppState, who: Principal, typed: dict[str, str],
                error: BadParameter | TooManyWebhooks | None) -> Response:
    group, base = _where(request)
    found = await state.webhooks.list_webhooks(who, group)
    context: dict[str, Any] = {
        "group": group,
        "base": base,
        "webhooks": found,
        "typed": typed,
        "error": str(error) if error else None,
        "error_field": getattr(error, "name", None) if error else None,
    }
    return show(request, "admin_webhooks.html", context, 400 if error else 200)


@page
async def add(request: Request) -> Response:
    state, who, form = await read_form(request)
    group, base = _where(request)
    fields = {"url": text(form, "url", 2000), "secret": text(form, "secret", 2000),
              "events": text(form, "events", 20)}
    try:
        webhook = await state.webhooks.register(who, group, fields)
    except (BadParameter, TooManyWebhooks) as exc:
        typed = {"url": fields["url"], "events": fields["events"]}  # never the secret
        return await _list(request, state, who, typed, exc)
    return see_other(f"{base}/{webhook.id}?done=webhook-added")


@page
async def webhook(request: Request) -> Response:
    state, who = await viewer(request)
    group, base = _where(request)
    found, deliveries = await state.webhooks.get_webhook(who, group, request.path_params["id"])
    return show(request, "admin_webhook.html", {
        "group": group, "base": base, "webhook": found, "deliveries": deliveries,
    })


@page
async def delete_confirm(request: Request) -> Response:
    state, who = await viewer(request)
    group, base = _where(request)
    found, _ = await state.webhooks.get_webhook(who, group, request.path_params["id"])
    whose = f"group {group!r}" if group else "the server"
    return confirm(
        request, title="Delete a webhook",
        question=f"Delete the webhook of {whose} that posts to {found.url}? Its deliveries not "
                 "yet sent are dropped.",
        action=f"{base}/{found.id}/delete", button="Delete", back=f"{base}/{found.id}",
        fields={})


@page
async def delete(request: Request) -> Response:
    state, who, _ = await read_form(request)
    group, base = _where(request)
    await state.webhooks.delete(who, group, request.path_params["id"])
    return see_other(f"{base}?done=webhook-deleted")
