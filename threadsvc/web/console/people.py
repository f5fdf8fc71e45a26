"""The administration pages for people: the index, users, groups and their members, and OAuth
clients. Each reads and changes through threadsvc.management, which holds every rule of who
may (administrators: everything; managers: the members of the groups they manage); these
views parse forms, call it and render what it answers.

Threat model: the signed-in viewer sends any field with any value (another group, a role above
theirs, a name with markup in it): the management module refuses what they may not do, Jinja
escapes every name shown, and each form carries the session's CSRF token (`poster`). A change
that takes something away (disable, revoke, remove) is asked for on a confirmation page first,
a plain form that works without JavaScript. Passwords are never put back into a page.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response

from threadsvc.errors import BadParameter, Conflict, Forbidden, NotFound
from threadsvc.management import (
    Management,
    grantable,
    may_administer,
    may_change_member,
    may_manage_users,
)
from threadsvc.models import Principal
from threadsvc.state import AppState
from threadsvc.web.console.pages import HOME, UI, page, poster, render, see_other, viewer

ADMIN = f"{UI}/admin"
FIELDS = 20  # the most fields an administration form has, with room to spare
# ?done=KEY after a change: the page says what happened (never text from the query itself)
DONE = {
    "user-added": "The user is added.",
    "password": "The password is changed; the user's console sessions have ended.",
    "disabled": "The user is disabled: their sessions and access tokens have ended, "
                "their API tokens and OAuth clients are deleted.",
    "enabled": "The user is enabled: their password works again.",
    "unlocked": "The lockout is lifted.",
    "not-locked": "The account was not locked: nothing changed.",
    "revoked": "Every API token and OAuth client of the user is deleted; "
               "their console sessions have ended.",
    "group-added": "The group is added.",
    "member-added": "The member is added.",
    "member-changed": "The member's role is changed.",
    "member-removed": "The member is removed.",
    "client-removed": "The OAuth client is removed; its access tokens end.",
    "webhook-added": "The webhook is registered.",
    "webhook-deleted": "The webhook is deleted.",
}


def management(state: AppState) -> Management:
    return Management(state.service.store, state.identity)


def done(request: Request) -> str | None:
    return DONE.get(request.query_params.get("done", ""))


def user_href(username: str) -> str:
    return f"{ADMIN}/user?name={quote(username, safe='')}"


def show(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
    """An administration page: its notice, and the Admin entry of the nav marked."""
    return render(request, name, {"nav": "admin", "notice": done(request), **context}, status)


async def read_form(request: Request) -> tuple[AppState, Principal, FormData]:
    async with request.form(max_files=0, max_fields=FIELDS) as form:
        state, who = await poster(request, form)
        return state, who, form


def text(form: FormData, name: str, most: int = 200) -> str:
    value = form.get(name)
    return value[:most] if isinstance(value, str) else ""


def confirm(request: Request, *, title: str, question: str, action: str, button: str,
            back: str, fields: dict[str, str]) -> Response:
    """The step before a destructive change: what it does, and the one button that does it."""
    return show(request, "admin_confirm.html", {
        "title": title, "question": question, "action": action, "button": button,
        "back": back, "fields": fields,
    })


# -- the index --------------------------------------------------------------------------------
@page
async def index(request: Request) -> Response:
    state, who = await viewer(request)
    if not may_administer(who):
        raise Forbidden("Administration is for administrators and the managers of a group")
    return show(request, "admin.html", {
        "groups": await management(state).groups(who),
        "everything": may_manage_users(who),
    })


# -- users ------------------------------------------------------------------------------------
@page
async def users(request: Request) -> Response:
    state, who = await viewer(request)
    return await _users(request, state, who, {}, None)


async def _users(request: Request, state: AppState, who: Principal, typed: dict[str, str],
                 error: BadParameter | Conflict | None) -> Response:
    search = request.query_params.get("q", "")[:64]
    number = request.query_params.get("page", "1")
    found = await management(state).users(
        who, search, int(number) if number.isascii() and number.isdigit() and len(number) < 10
        else 1)
    there = f"{ADMIN}/users?q={quote(search, safe='')}&page="
    return show(request, "admin_users.html", {
        "found": found,
        "search": search,
        "newer": there + str(found.page - 1) if found.page > 1 else None,
        "older": there + str(found.page + 1) if found.page < found.last else None,
        "typed": typed,
        "error": str(error) if error else None,
        "error_field": getattr(error, "name", "username") if error else None,
        "user_href": user_href,
    }, 400 if error else 200)


@page
async def add_user(request: Request) -> Response:
    state, who, form = await read_form(request)
    username = text(form, "username", 100).strip()
    try:
        await management(state).add_user(who, username, text(form, "password", 2000),
                                         text(form, "again", 2000), form.get("admin") == "on")
    except (BadParameter, Conflict) as exc:
        typed = {"username": username, "admin": "on" if form.get("admin") == "on" else ""}
        return await _users(request, state, who, typed, exc)
    return see_other(user_href(username) + "&done=user-added")


@page
async def user(request: Request) -> Response:
    state, who = await viewer(request)
    return await _user(request, state, who, request.query_params.get("name", ""), None)


async def _user(request: Request, state: AppState, who: Principal, username: str,
                error: BadParameter | None) -> Response:
    account = await management(state).account(who, username)
    return show(request, "admin_user.html", {
        "account": account,
        "details": account.details,
        "entry": account.details.entry,
        "error": str(error) if error else None,
        "error_field": error.name if error else None,
        "is_self": username == who.username,
    }, 400 if error else 200)


USER_CONFIRMS = {  # action: (title, question, button)
    "disable": ("Disable a user",
                ("Disable {}? Their sessions and access tokens end at once, and their API "
                "tokens and OAuth clients are deleted (enabling them again does not bring "
                "those back). Their threads stay."), "Disable"),
    "revoke": ("Revoke tokens",
               ("Revoke every token of {}? Their API tokens and OAuth clients are deleted "
               "(with the clients' access tokens), and their console sessions end. Their "
               "password still works."), "Revoke every token"),
}


@page
async def user_confirm(request: Request) -> Response:
    state, who = await viewer(request)
    action = request.path_params["action"]
    if action not in USER_CONFIRMS:
        raise NotFound(f"There is no page at {request.url.path}")
    username = request.query_params.get("name", "")
    account = await management(state).account(who, username)  # rights, and that they exist
    title, question, button = USER_CONFIRMS[action]
    name = account.details.entry.user.username
    return confirm(request, title=title, question=question.format(repr(name)),
                   action=f"{ADMIN}/user/{action}", button=button, back=user_href(name),
                   fields={"username": name})


USER_CHANGES = frozenset({"password", "disable", "enable", "unlock", "revoke"})


@page
async def user_change(request: Request) -> Response:
    state, who, form = await read_form(request)
    action = request.path_params["action"]
    if action not in USER_CHANGES:
        raise NotFound(f"There is no page at {request.url.path}")
    username = text(form, "username", 100)
    manage = management(state)
    try:
        if action == "password":
            await manage.set_password(who, username, text(form, "password", 2000),
                                      text(form, "again", 2000))
            outcome = "password"
        elif action == "disable":
            await manage.disable(who, username)
            outcome = "disabled"
        elif action == "enable":
            await manage.enable(who, username)
            outcome = "enabled"
        elif action == "unlock":
            outcome = "unlocked" if await manage.unlock(who, username) else "not-locked"
        else:  # revoke
            await manage.revoke_tokens(who, username)
            outcome = "revoked"
    except BadParameter as exc:
        return await _user(request, state, who, username, exc)
    return see_other(user_href(username) + f"&done={outcome}")


# -- groups and members -----------------------------------------------------------------------
@page
async def groups(request: Request) -> Response:
    state, who = await viewer(request)
    return await _groups(request, state, who, "", None)


async def _groups(request: Request, state: AppState, who: Principal, typed: str,
                  error: BadParameter | Conflict | None) -> Response:
    if not may_administer(who):
        raise Forbidden("Administration is for administrators and the managers of a group")
    return show(request, "admin_groups.html", {
        "groups": await management(state).groups(who),
        "may_add": may_manage_users(who),
        "typed": typed,
        "error": str(error) if error else None,
    }, 400 if error else 200)


@page
async def add_group(request: Request) -> Response:
    state, who, form = await read_form(request)
    name = text(form, "name", 100).strip()
    try:
        group = await management(state).add_group(who, name)
    except (BadParameter, Conflict) as exc:
        return await _groups(request, state, who, name, exc)
    return see_other(f"{ADMIN}/groups/{group.name}?done=group-added")


@page
async def group(request: Request) -> Response:
    state, who = await viewer(request)
    return await _group(request, state, who, {}, None)


async def _group(request: Request, state: AppState, who: Principal, typed: dict[str, str],
                 error: BadParameter | None) -> Response:
    manage = management(state)
    found = await manage.group(who, request.path_params["group"])
    members = await manage.members(who, found)
    try:
        await state.webhooks.authorize(who, found.name)  # the webhooks' own rule decides
        hooks = True
    except Forbidden:
        hooks = False
    return show(request, "admin_group.html", {
        "group": found,
        "members": [(entry, role, may_change_member(who, found.id, role))
                    for entry, role in members],
        "roles": grantable(who, found.id),
        "hooks": hooks,
        "typed": typed,
        "error": str(error) if error else None,
        "error_field": error.name if error else None,
        "user_href": user_href if may_manage_users(who) else None,
    }, 400 if error else 200)


@page
async def set_member(request: Request) -> Response:
    state, who, form = await read_form(request)
    name = request.path_params["group"]
    username = text(form, "username", 100).strip()
    role = text(form, "role", 20)
    try:
        if not username:
            raise BadParameter("username", "is required")
        existed = await management(state).set_member(who, name, username, role)
    except BadParameter as exc:
        return await _group(request, state, who, {"username": username, "role": role}, exc)
    outcome = "member-changed" if existed else "member-added"
    return see_other(_after_membership(who, name, username, outcome))


@page
async def remove_member_confirm(request: Request) -> Response:
    state, who = await viewer(request)
    name = request.path_params["group"]
    username = request.query_params.get("name", "")
    role = await management(state).member_role(who, name, username)
    return confirm(
        request, title="Remove a member",
        question=f"Remove {username!r} ({role.label}) from group {name!r}? They lose what the "
                 "role gave them there at once; their threads stay.",
        action=f"{ADMIN}/groups/{name}/members/remove", button="Remove",
        back=f"{ADMIN}/groups/{name}", fields={"username": username})


@page
async def remove_member(request: Request) -> Response:
    state, who, form = await read_form(request)
    name = request.path_params["group"]
    username = text(form, "username", 100)
    await management(state).remove_member(who, name, username)
    return see_other(_after_membership(who, name, username, "member-removed"))


def _after_membership(who: Principal, group: str, username: str, outcome: str) -> str:
    """The group's page; but a manager who changed their own membership may have lost it (a
    page that would answer 403): their groups instead."""
    if username == who.username and not who.is_admin:
        return HOME
    return f"{ADMIN}/groups/{group}?done={outcome}"


# -- OAuth clients ----------------------------------------------------------------------------
@page
async def clients(request: Request) -> Response:
    state, who = await viewer(request)
    return show(request, "admin_clients.html", {
        "clients": await management(state).clients(who),
        "user_href": user_href,
    })


@page
async def remove_client_confirm(request: Request) -> Response:
    state, who = await viewer(request)
    client_id = request.query_params.get("id", "")[:100]
    found = [c for c in await management(state).clients(who) if c[0] == client_id]
    if not found:
        raise NotFound(f"no client '{client_id}'")
    return confirm(
        request, title="Remove an OAuth client",
        question=f"Remove the OAuth client {client_id!r} of {found[0][1]!r}? Its access tokens "
                 "end, and whoever holds its secret can no longer get new ones.",
        action=f"{ADMIN}/clients/remove", button="Remove", back=f"{ADMIN}/clients",
        fields={"client": client_id})


@page
async def remove_client(request: Request) -> Response:
    state, who, form = await read_form(request)
    await management(state).remove_client(who, text(form, "client", 100))
    return see_other(f"{ADMIN}/clients?done=client-removed")
