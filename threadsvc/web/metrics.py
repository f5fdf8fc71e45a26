"""/metrics in the web layer: who may scrape it, and how an answer is counted.

Threat model: the figures tell how busy the server is, which jobs run and which routes fail,
so they are for operators: an administrator's credentials, or the bearer of `metrics-token`
(a secret setting for the scraper, compared in constant time; a wrong one is 401 as any bad
credential). An answer is labelled (threadsvc.web.access) by the template of the route
Starlette matched, never by its path, so that a scanner cannot add series.
"""

from __future__ import annotations

import hashlib
import hmac

from starlette.requests import Request

from threadsvc.errors import Forbidden
from threadsvc.state import AppState
from threadsvc.web.auth import authenticate


async def check_scraper(request: Request, state: AppState) -> None:
    """Returns when the caller may read /metrics: the bearer of `metrics-token`, or an
    administrator (any credentials, else 401); 403 for anyone else."""
    token = state.settings.metrics_token
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if token and scheme.lower() == "bearer" and _same(value.strip(), token):
        return
    who = await authenticate(request, state.identity)  # a wrong token is a 401 here
    if not who.is_admin:
        raise Forbidden("Only administrators and the bearer of metrics-token may read /metrics")


def _same(given: str, expected: str) -> bool:
    """Constant time, whatever the lengths (digests of equal length are compared)."""
    digest = hashlib.sha256
    return hmac.compare_digest(digest(given.encode()).digest(), digest(expected.encode()).digest())
