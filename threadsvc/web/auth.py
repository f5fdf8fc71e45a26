"""Who is calling: HTTP Basic or Bearer credentials, or the console's session cookie on safe
methods, into a Principal (or AuthenticationFailed).

The cookie is honoured for GET and HEAD only, so that the console's pages and EventSource work
while a cross-site POST can never act with it; the console's own forms check a CSRF token and
then call `session_user` themselves (threadsvc.web.console.session).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request

from threadsvc.errors import AuthenticationFailed, Forbidden
from threadsvc.identity import READ_SCOPE, Identity
from threadsvc.models import Principal, User
from threadsvc.web.access import note_user

SAFE_METHODS = frozenset({"GET", "HEAD"})
# What a signed-in console session holds, and nothing more: a random session id (fresh at
# each sign-in), the user's id, username and credential version. The user is read again on
# every request, and the session ends once the version moved (password changed, disabled).
SESSION_ID, SESSION_USER_ID, SESSION_USERNAME = "sid", "uid", "username"
SESSION_VERSION = "cv"


def client_address(request: Request) -> str:
    """The client's address as uvicorn saw it (X-Forwarded-For only from trusted proxies)."""
    return request.client.host if request.client is not None else "unknown"


def parse_basic(value: str) -> tuple[str, str]:
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except ValueError:  # binascii.Error, UnicodeDecodeError, and non-ASCII text
        raise AuthenticationFailed("Malformed Basic credentials") from None
    username, sep, password = decoded.partition(":")
    if not sep or not username or "\x00" in decoded:
        raise AuthenticationFailed("Malformed Basic credentials")
    return username, password


async def session_user(request: Request, identity: Identity) -> User | None:
    """The user a signed-in console session names, as the store has it now; None when there is
    no such session, or the user is gone, disabled (or is another user of the same name), or
    their credentials changed since the sign-in."""
    session: Mapping[str, Any] | None = request.scope.get("session")
    if not session:
        return None
    username, user_id = session.get(SESSION_USERNAME), session.get(SESSION_USER_ID)
    if not isinstance(username, str) or not isinstance(user_id, int):
        return None
    if not isinstance(session.get(SESSION_ID), str):
        return None
    user = await identity.user_now(user_id, username)
    if user is None or session.get(SESSION_VERSION) != user.credential_version:
        return None
    note_user(request.scope, user.username)  # the console's forms ask here, not authenticate
    return user


async def authenticate(request: Request, identity: Identity) -> Principal:
    principal = await _principal(request, identity)
    note_user(request.scope, principal.username)  # for the access log
    return principal


async def _principal(request: Request, identity: Identity) -> Principal:
    header = request.headers.get("authorization")
    if not header:
        if request.method in SAFE_METHODS:
            user = await session_user(request, identity)
            if user is not None:
                return await principal_of(request, identity, user)
        raise AuthenticationFailed("Credentials are required (HTTP Basic or Bearer)")
    scheme, _, value = header.partition(" ")
    scheme = scheme.lower()
    if scheme == "basic":
        username, password = parse_basic(value)
        user = await identity.check_password(username, password, client_address(request))
    elif scheme == "bearer" and value.strip():
        user, scope = await identity.bearer(value.strip())
        if scope == READ_SCOPE and request.method not in SAFE_METHODS:
            raise Forbidden("This access token's scope is read: it may not change anything")
    else:
        raise AuthenticationFailed("Unsupported credentials; use HTTP Basic or Bearer")
    return await principal_of(request, identity, user)


async def principal_of(request: Request, identity: Identity, user: User) -> Principal:
    """The caller, with their address (for the audit log of what they change)."""
    return await identity.principal(user, client_address(request))
