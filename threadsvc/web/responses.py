"""Answering in the format the client asked for: XML by default, JSON when preferred."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.requests import Request
from starlette.responses import Response

from threadsvc.xml import render

XML_TYPE = "application/xml;charset=utf-8"  # exactly so: a Java client rejects the spaced form
JSON_TYPE = "application/json;charset=utf-8"
FORMAT_KEY = "threadsvc.format"  # set from a .json/.xml suffix under /ps/api
PREFIX_KEY = "threadsvc.prefix"
PATH_KEY = "threadsvc.path"


class XMLResponse(Response):
    media_type = XML_TYPE

    def init_headers(self, headers: Mapping[str, str] | None = None) -> None:
        super().init_headers(headers)
        # Starlette appends "; charset=utf-8" to text types only; set ours verbatim.
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-type"]
        self.raw_headers.append((b"content-type", self.media_type.encode()))


class JSONResponse(XMLResponse):
    media_type = JSON_TYPE


def _quality(accept: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for part in accept.split(","):
        pieces = [p.strip() for p in part.split(";")]
        media = pieces[0].lower()
        q = 1.0
        for param in pieces[1:]:
            if param.startswith("q="):
                try:
                    q = float(param[2:])
                except ValueError:
                    q = 0.0
        if media:
            found[media] = max(q, found.get(media, 0.0))
    return found


def wants(request: Request, media: str) -> bool:
    """True when Accept names `media` and prefers it to XML."""
    q = _quality(request.headers.get("accept", ""))
    q_xml = max(q.get("application/xml", 0.0), q.get("text/xml", 0.0))
    return q.get(media, 0.0) > 0 and q.get(media, 0.0) > q_xml


def wants_json(request: Request) -> bool:
    fmt = request.scope.get(FORMAT_KEY)
    if fmt is not None:
        return bool(fmt == "json")
    return wants(request, "application/json")


def document(
    request: Request,
    element: render.Element,
    status_code: int = 200,
    headers: Mapping[str, str] | None = None,
) -> Response:
    as_json = wants_json(request)
    return respond(as_json, serialise(element, as_json), status_code, headers)


def serialise(element: render.Element, as_json: bool) -> bytes:
    return render.to_json(element) if as_json else render.to_xml(element)


def respond(
    as_json: bool, body: bytes, status_code: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """A document already serialised by `serialise`."""
    kind = JSONResponse if as_json else XMLResponse
    return kind(body, status_code, headers)


def prefix(request: Request) -> str:
    return str(request.scope.get(PREFIX_KEY, "/ps/service"))


def request_path(request: Request) -> str:
    return str(request.scope.get(PATH_KEY, request.url.path))
