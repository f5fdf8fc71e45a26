"""The server's address as its clients reach it: every URL the server sends, in a header
(`Location`, `Content-Location`) or in `<result href>`, is absolute and built by `absolute`,
on `public-url` when it is set, else on the request's scheme and host.

Threat model: the Host header, and the X-Forwarded-Host and X-Forwarded-Proto a proxy adds,
are written by whoever sends the request. Left unchecked they would choose where the links
of an answer point (a cache in front would then hand a forged link to others), and carry
into a header whatever they hold. So:
- with `public-url` set, no header of the request takes part in a URL;
- X-Forwarded-Proto, -For and -Host are read only from a peer in `forwarded-allow-ips`
  (`ProxyHeaders`: uvicorn's own middleware, plus the host, which uvicorn does not read);
  from any other peer they are ignored. `Forwarded` (RFC 7239) is not read at all;
- the Host a request ends with (its own, or a trusted proxy's) must be a host name or an IP
  literal with an optional port, or the request is refused with 400 `0201` (as HTTP
  requires of a server): a URL built on it holds no path, user, space or control character.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from threadsvc.settings import Settings, SettingsError
from threadsvc.state import app_state
from threadsvc.web.errors import error_response

# reg-name (letters, digits, `.-_~`) or a bracketed IPv6 literal, then an optional port
_HOST = re.compile(r"(?:[A-Za-z0-9._~-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{0,5})?")


def absolute(request: Request, path: str) -> str:
    """`path` (the server's own, from `/`) as an absolute URL: on `public-url` when set, so
    that no request can choose the site its links point to; else on the request's scheme
    and host (as `ProxyHeaders` left them)."""
    base = app_state(request).settings.public_url or str(request.base_url)
    return base.rstrip("/") + path


class ProxyHeaders(ProxyHeadersMiddleware):
    """uvicorn's ProxyHeadersMiddleware (X-Forwarded-Proto and X-Forwarded-For, from the
    trusted peers only) with X-Forwarded-Host from the same peers, and the Host check.

    Of several X-Forwarded-Host values, the last is taken: the one the trusted proxy that
    connected added, not one its client sent ahead of it."""

    def __init__(self, app: ASGIApp, trusted: tuple[str, ...]) -> None:
        # uvicorn trusts every peer only for exactly "*" (a string or a one-item list)
        super().__init__(app, trusted_hosts=list(trusted))  # type: ignore[arg-type]

    async def __call__(  # type: ignore[override]
        self, scope: Scope, receive: Receive, send: Send
    ) -> None:
        if scope["type"] == "http":
            client = scope.get("client")
            if client and client[0] in self.trusted_hosts:
                scope = _forwarded_host(scope)
            hosts = [value for name, value in scope["headers"] if name == b"host"]
            if len(hosts) > 1 or (hosts and not _HOST.fullmatch(hosts[0].decode("latin-1"))):
                headers = {"X-Content-Type-Options": "nosniff", "Connection": "close"}
                message = "Host must be a host name or an IP address, with an optional port"
                answer = error_response(Request(scope), 400, "0201", message, headers)
                await answer(scope, receive, send)
                return
        await super().__call__(scope, receive, send)  # type: ignore[arg-type]


def _forwarded_host(scope: Scope) -> Scope:
    """The scope with X-Forwarded-Host (its last value) as its Host, when it has one."""
    values = [value for name, value in scope["headers"] if name == b"x-forwarded-host"]
    nearest = b",".join(values).rsplit(b",", 1)[-1].strip()
    if not nearest:
        return scope
    headers = [(name, value) for name, value in scope["headers"] if name != b"host"]
    return {**scope, "headers": [*headers, (b"host", nearest)]}


def check_settings(settings: Settings) -> None:
    """`public-url` and `forwarded-allow-ips` as `serve` needs them, or SettingsError."""
    if settings.public_url:
        parts = urlsplit(settings.public_url)
        if (
            parts.scheme not in ("http", "https")
            or not _HOST.fullmatch(parts.netloc)
            or parts.query
            or parts.fragment
            or not re.fullmatch(r"[A-Za-z0-9._~!$&'()*+,;=:@%/-]*", parts.path)
        ):
            raise SettingsError(
                "setting 'public-url': must be an http or https URL with a host (an optional "
                "port and path, no user, query or fragment), e.g. https://threads.example.org"
            )
    trusted = settings.forwarded_allow_ips
    if trusted == ("*",):
        return
    for item in trusted:
        try:
            if "/" in item:
                ipaddress.ip_network(item)
            else:
                ipaddress.ip_address(item)
        except ValueError:
            raise SettingsError(
                f"setting 'forwarded-allow-ips': {item!r} is not an IP address or network "
                "(or \"*\" alone, to trust every peer)"
            ) from None
