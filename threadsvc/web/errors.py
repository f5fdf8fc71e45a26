"""The one table from errors to status codes and error ids (docs/api.md#errors)."""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from threadsvc import errors
from threadsvc.web.access import id_headers
from threadsvc.web.responses import document, request_path
from threadsvc.xml.render import error_element

log = logging.getLogger("threadsvc.web")

# Most specific first: the first class an error is an instance of decides.
TABLE: list[tuple[type[Exception], int, str]] = [
    (errors.AuthenticationFailed, 401, "0100"),
    (errors.Forbidden, 403, "0101"),
    (errors.MethodNotAllowed, 405, "0103"),
    (errors.UnknownJob, 400, "0205"),
    (errors.BadParameter, 400, "0201"),
    (errors.WebhookNotFound, 404, "0207"),
    (errors.GroupNotFound, 404, "0202"),
    (errors.ThreadNotFound, 404, "0203"),
    (errors.ServiceNotFound, 404, "0204"),
    (errors.NotFound, 404, "0204"),
    (errors.BodyTooLarge, 413, "0206"),
    (errors.RequestTooSlow, 408, "0209"),
    (errors.Conflict, 409, "0208"),
    (errors.TooManyActiveThreads, 429, "0300"),
    (errors.AccountLocked, 429, "0301"),
    (errors.TooManyStreams, 429, "0302"),
    (errors.TooManyWebhooks, 429, "0303"),
    (errors.ThreadStillRunning, 409, "0403"),
    (errors.LinkRefused, 403, "0400"),
    (errors.ResultDeleted, 410, "0401"),
    (errors.NoResult, 409, "0402"),
    (errors.StoreUnavailable, 503, "0503"),
    (errors.ServerBusy, 503, "0503"),
    (errors.FileUnavailable, 503, "0503"),
    (errors.StorageFull, 507, "0507"),
]


def status_of(exc: Exception) -> tuple[int, str] | None:
    """The status code and error id of the first class in TABLE that `exc` is an instance of."""
    return next(((status, id_) for cls, status, id_ in TABLE if isinstance(exc, cls)), None)


def error_response(request: Request, status: int, error_id: str, message: str,
                   headers: dict[str, str] | None = None) -> Response:
    element = error_element(error_id, request_path(request), message)
    return document(request, element, status, headers)


async def threadsvc_error(request: Request, exc: Exception) -> Response:
    found = status_of(exc)
    if found is None:
        return await internal_error(request, exc)
    status, error_id = found
    headers: dict[str, str] = {}
    if isinstance(exc, errors.AuthenticationFailed):
        scheme = request.headers.get("authorization", "").split(" ", 1)[0].lower()
        headers["WWW-Authenticate"] = (
            'Bearer realm="threadsvc", error="invalid_token"'
            if scheme == "bearer"
            else 'Basic realm="threadsvc", charset="UTF-8"'
        )
    if isinstance(exc, errors.RetryLater):
        headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, errors.StoreUnavailable):
        log.warning("store unavailable: %s", exc)
        headers["Retry-After"] = "5"
        return error_response(request, status, error_id, "The store is unavailable; try again", headers)
    if isinstance(exc, errors.FileUnavailable):  # logged: an operator must see a missing file
        log.warning("file storage unavailable: %s", exc)
        headers["Retry-After"] = "5"
        return error_response(
            request, status, error_id, "The file storage is unavailable; try again", headers
        )
    return error_response(request, status, error_id, str(exc), headers)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return error_response(request, 404, "0204", f"No service at {request_path(request)}")
    if exc.status_code == 405:
        return error_response(
            request, 405, "0103", f"Method {request.method} is not allowed here",
            dict(exc.headers or {}),
        )
    if exc.status_code == 400:
        return error_response(request, 400, "0201", f"Bad request: {exc.detail}")
    if exc.status_code == 413:
        return error_response(request, 413, "0206", "The body is too large")
    return error_response(request, exc.status_code, "0500", str(exc.detail))


def out_of_space(exc: BaseException | None) -> bool:
    """Whether `exc`, or an exception it was raised from or during, is a full disk."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError) and exc.errno in errors.OUT_OF_SPACE:
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


# Starlette sends what `internal_error` answers outside every middleware (AccessLog included).
OUTSIDE_MIDDLEWARE = {"X-Content-Type-Options": "nosniff"}


async def internal_error(request: Request, exc: Exception) -> Response:
    if out_of_space(exc):  # e.g. an upload written to a full data-dir
        log.warning("no space left on %s %s: %s", request.method, request.url.path, exc)
        return error_response(
            request, 507, "0507", "No space left on the server to store this; try again later",
            {**OUTSIDE_MIDDLEWARE, **id_headers(request.scope)},
        )
    log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(request, 500, "0500", "Internal error; it has been logged",
                          {**OUTSIDE_MIDDLEWARE, **id_headers(request.scope)})
