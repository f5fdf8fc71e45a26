"""The webhook handlers (docs/api.md#webhooks): parse the request, call the WebhookService, render the answer.

The same handlers serve `/groups/{group}/webhooks...` (managers of the group) and
`/webhooks...` (administrators, for every thread of the server).
"""

from __future__ import annotations

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response

from threadsvc.delivery.service import WebhookService
from threadsvc.errors import BadParameter
from threadsvc.models import Principal
from threadsvc.state import app_state
from threadsvc.web.auth import authenticate
from threadsvc.web.responses import JSONResponse, document, prefix, wants_json
from threadsvc.web.urls import absolute
from threadsvc.xml import render

MEDIA_FORMS = ("application/x-www-form-urlencoded", "multipart/form-data")


async def _who(request: Request) -> tuple[WebhookService, Principal]:
    state = app_state(request)
    return state.webhooks, await authenticate(request, state.identity)


def _group(request: Request) -> str | None:
    return request.path_params.get("group")


async def _fields(request: Request) -> dict[str, str]:
    """The form fields, each at most once. Only the body counts: a secret in a query string
    would end up in access logs."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in MEDIA_FORMS:
        if await request.body():
            raise BadParameter("body", "must be form fields (url, secret, events)")
        return {}
    fields: dict[str, str] = {}
    async with request.form(max_files=0, max_fields=20) as form:
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                raise BadParameter(key[:64], "must be text, not a file")
            if key in fields:
                raise BadParameter(key[:64], "is given more than once")
            fields[key] = value
    return fields


async def list_webhooks(request: Request) -> Response:
    webhooks, who = await _who(request)
    found = await webhooks.list_webhooks(who, _group(request))
    return document(request, render.webhooks_element(found))


async def register(request: Request) -> Response:
    webhooks, who = await _who(request)
    group = _group(request)
    await webhooks.authorize(who, group)  # 403 before any complaint about the body
    fields = await _fields(request)
    webhook = await webhooks.register(who, group, fields)
    where = f"/groups/{group}" if group is not None else ""
    location = absolute(request, f"{prefix(request)}{where}/webhooks/{webhook.id}")
    return document(request, render.webhook_element(webhook), 201, {"Location": location})


async def get_webhook(request: Request) -> Response:
    webhooks, who = await _who(request)
    webhook, deliveries = await webhooks.get_webhook(
        who, _group(request), request.path_params["id"]
    )
    element = render.webhook_element(webhook, deliveries)
    if wants_json(request):
        return JSONResponse(render.webhook_to_json(element))
    return document(request, element)


async def delete_webhook(request: Request) -> Response:
    webhooks, who = await _who(request)
    await webhooks.delete(who, _group(request), request.path_params["id"])
    return Response(status_code=204)
