"""Who is calling: HTTP Basic or Bearer credentials into a Principal (or AuthenticationFailed)."""

from __future__ import annotations

import base64
import binascii

from starlette.requests import Request

from threadsvc.errors import AuthenticationFailed
from threadsvc.identity import Identity
from threadsvc.models import Principal


def parse_basic(value: str) -> tuple[str, str]:
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise AuthenticationFailed("Malformed Basic credentials") from None
    username, sep, password = decoded.partition(":")
    if not sep or not username:
        raise AuthenticationFailed("Malformed Basic credentials")
    return username, password


async def authenticate(request: Request, identity: Identity) -> Principal:
    header = request.headers.get("authorization")
    if not header:
        raise AuthenticationFailed("Credentials are required (HTTP Basic or Bearer)")
    scheme, _, value = header.partition(" ")
    scheme = scheme.lower()
    if scheme == "basic":
        username, password = parse_basic(value)
        user = await identity.check_password(username, password)
    elif scheme == "bearer" and value.strip():
        user = await identity.check_bearer(value.strip())
    else:
        raise AuthenticationFailed("Unsupported credentials; use HTTP Basic or Bearer")
    return await identity.principal(user)
