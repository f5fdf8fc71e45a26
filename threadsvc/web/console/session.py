"""The console's session: a cookie signed by Starlette's SessionMiddleware, and CSRF tokens.

The secret keys are known only once the lifespan has read them (they may live in the store),
so `ConsoleSessions` builds its SessionMiddleware on the first request, from the `Console`
that `create_app` puts in the application state (threadsvc.state). The cookie is HttpOnly and SameSite=Lax, and
Secure whenever the request came over https (as uvicorn sees it, X-Forwarded-Proto included).

A session holds only a random id and, once signed in, the user's id, username and credential
version (see threadsvc.web.auth). Sign-in replaces the whole session with a fresh id, so an id planted
before sign-in is worth nothing after; sign-out clears it. A CSRF token is the session id
signed with its own salt: it is valid only with the session it was made for.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from threadsvc.models import User
from threadsvc.web.auth import SESSION_ID, SESSION_USER_ID, SESSION_USERNAME, SESSION_VERSION

if TYPE_CHECKING:  # the state holds a Console: imported at run time, this would be a cycle
    from threadsvc.state import AppState

COOKIE = "threadsvc-session"
COOKIE_PATH = "/ps"  # the console and the services (EventSource) under one cookie
MAX_AGE = 12 * 3600  # seconds a sign-in lasts (the cookie is signed again only when it changes)
CSRF_FIELD = "csrf"


def _derive(key: str, purpose: str) -> str:
    """A key for one purpose only, so that no other signed value passes for a session."""
    return hmac.new(key.encode(), f"threadsvc console {purpose}".encode(), hashlib.sha256).hexdigest()


class Console:
    """What the console needs from the secret keys: the session key and the CSRF signer.

    Sessions are signed with the first (signing) key; rotating keys signs everyone out."""

    def __init__(self, secret_keys: tuple[str, ...]) -> None:
        self.session_key = _derive(secret_keys[0], "session")
        # itsdangerous signs with the last key and verifies with every one.
        keys = [_derive(key, "csrf") for key in reversed(secret_keys)]
        self._csrf = URLSafeTimedSerializer(keys, salt="console-csrf")

    def csrf_token(self, request: Request) -> str:
        """A token for the forms of this page; starts an anonymous session when there is none."""
        session = _session(request)
        sid = session.get(SESSION_ID)
        if not isinstance(sid, str):
            sid = session[SESSION_ID] = secrets.token_urlsafe(24)
        return self._csrf.dumps(sid)

    def csrf_ok(self, request: Request, token: object) -> bool:
        sid = _session(request).get(SESSION_ID)
        if not isinstance(token, str) or not isinstance(sid, str) or len(token) > 500:
            return False
        try:
            signed = self._csrf.loads(token, max_age=MAX_AGE)
        except BadSignature:
            return False
        return isinstance(signed, str) and hmac.compare_digest(signed.encode(), sid.encode())


def _session(request: Request) -> MutableMapping[str, Any]:
    session: MutableMapping[str, Any] = request.scope["session"]
    return session


def sign_in(request: Request, user: User) -> None:
    """A new session for `user`: new contents and a new id (no session fixation)."""
    session = _session(request)
    session.clear()
    session.update(
        {SESSION_ID: secrets.token_urlsafe(24), SESSION_USER_ID: user.id,
         SESSION_USERNAME: user.username, SESSION_VERSION: user.credential_version}
    )


def sign_out(request: Request) -> None:
    _session(request).clear()


class ConsoleSessions:
    """SessionMiddleware once the keys are known, Secure on https requests."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._middleware: dict[bool, SessionMiddleware] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        console: Console | None = None
        if scope["type"] == "http":
            state: AppState | None = getattr(scope["app"].state, "threadsvc", None)
            console = state.console if state is not None else None
        if console is None or not _may_have_session(scope):
            await self.app(scope, receive, send)
            return
        https = scope.get("scheme") == "https"
        middleware = self._middleware.get(https)
        if middleware is None:
            middleware = self._middleware[https] = SessionMiddleware(
                self.app, console.session_key, session_cookie=COOKIE, max_age=MAX_AGE,
                path=COOKIE_PATH, same_site="lax", https_only=https,
            )
        await middleware(scope, receive, send)


def _may_have_session(scope: Scope) -> bool:
    """Whether the request brings a cookie or is the console's (which may start a session):
    API calls without cookies skip the session machinery, which costs every poll."""
    if scope["path"].startswith("/ps/ui"):
        return True
    return any(name == b"cookie" for name, _ in scope["headers"])
