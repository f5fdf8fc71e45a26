"""Payloads and checks shared by the hostile-input modules (tests/hostile/test_*.py).

Every check talks to a real server (tests/support.py `Server`) over real HTTP."""

from __future__ import annotations

import io
import re
import threading
import time
import zipfile
from typing import Any

import httpx
from lxml import etree

from tests.support import Server, Upload, thread_id, wait_final
from threadsvc.xml.schemas import validate

XML_TYPE = "application/xml;charset=utf-8"
GROUP = "/ps/service/groups/dev"
PASSWD_LINE = re.compile(r"\w+:[x*!]?:\d+:\d+:")  # what a line of /etc/passwd looks like
MARKER = "HOSTILE-MARKER-5c1e"  # planted in files and listeners' answers: must never come back

_SCHEMA_LOCK = threading.Lock()  # validate() is for one OS thread at a time per schema


# -- answers ----------------------------------------------------------------------------------
def check_error(
    response: httpx.Response, status: int, error_id: str | None = None, naming: str | None = None
) -> Any:
    """A complete docs/api.md#errors error document with the exact Content-Type; never a 500."""
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert response.headers.get("content-type") == XML_TYPE, response.headers
    with _SCHEMA_LOCK:
        validate(response.content)  # error.xsd
    root = etree.fromstring(response.content)
    assert root.tag == "error", response.text[:500]
    if error_id is not None:
        assert root.get("id") == error_id, response.text[:500]
    assert [child.tag for child in root] == ["request", "message"], response.text[:500]
    message = root.findtext("message") or ""
    assert message.strip() and "Traceback" not in response.text, response.text[:500]
    if naming is not None:
        assert naming in message, message
    return root


def assert_no_leak(*texts: str | bytes) -> None:
    """Nothing of /etc/passwd, nothing of a planted marker."""
    for item in texts:
        text = item.decode("utf-8", "replace") if isinstance(item, bytes) else item
        assert not PASSWD_LINE.search(text), text[:500]
        assert MARKER not in text, text[:500]


def still_serving(server: Server, timeout: float = 10.0) -> None:
    """The server answers /health and an authenticated list within `timeout` seconds (a
    generous bound: it only tells a live server from a stuck one)."""
    assert server.process is not None and server.process.poll() is None, "the server died"
    deadline = time.monotonic() + timeout
    with server.client("contributor", timeout=timeout) as http:
        assert http.get("/health").status_code == 200
        assert http.get(f"{GROUP}/threads").status_code == 200
    assert time.monotonic() < deadline


def thread_total(server: Server) -> int:
    """Threads of every status, server level and group `dev`."""
    total = 0
    with server.client("admin") as admin:
        for path in ("/ps/service/threads", f"{GROUP}/threads"):
            answer = admin.get(path, params={"status": "all", "pagesize": 1})
            assert answer.status_code == 200, answer.text
            total += int(etree.fromstring(answer.content).get("total") or "0")
    return total


def post_xml(http: httpx.Client, body: bytes, path: str = f"{GROUP}/threads") -> httpx.Response:
    return http.post(path, content=body, headers={"Content-Type": "application/xml"})


# -- jobs with uploads ------------------------------------------------------------------------
def start_upload(http: httpx.Client, job: str, uploads: list[tuple[str, Upload]],
                 **fields: str) -> str:
    """Start `job` with files (`(field, (name, bytes))`); the thread's id."""
    files = [(field, (name, data, "application/octet-stream")) for field, (name, data) in uploads]
    response = http.post(f"{GROUP}/threads", data={"job": job, **fields}, files=files)
    assert response.status_code == 202, response.text
    return thread_id(response)


def finish(http: httpx.Client, tid: str, timeout: float = 60) -> Any:
    """The thread once final."""
    return etree.fromstring(wait_final(http, tid, timeout=timeout).content)


def thread_logs(http: httpx.Client, tid: str) -> list[tuple[str, str]]:
    response = http.get(f"{GROUP}/threads/{tid}/logs", params={"limit": 10000})
    assert response.status_code == 200, response.text
    return [(e.get("level") or "", e.text or "") for e in etree.fromstring(response.content)]


def result_bytes(http: httpx.Client, tid: str) -> bytes | None:
    """The result through its pre-signed link, or None when the thread has none (409)."""
    answer = http.get(f"{GROUP}/threads/{tid}/result")
    if answer.status_code == 409:
        return None
    assert answer.status_code == 302, answer.text
    download = httpx.get(answer.headers["location"])
    assert download.status_code == 200
    return download.content


def zip_of(entries: list[Upload], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in entries:
            archive.writestr(name, data)
    return buffer.getvalue()


# -- XML payloads -----------------------------------------------------------------------------
def billion_laughs(root: str = "doc", levels: int = 10, fanout: int = 10) -> bytes:
    """fanout^levels copies of "lol" from a few hundred bytes of declarations."""
    entities = ['<!ENTITY lol0 "lol">'] + [
        f'<!ENTITY lol{i} "{f"&lol{i - 1};" * fanout}">' for i in range(1, levels)
    ]
    return (f'<?xml version="1.0"?><!DOCTYPE {root} [' + "".join(entities) + "]>"
            f"<{root}><title>&lol{levels - 1};</title></{root}>").encode()


def quadratic_blowup(root: str = "doc", size: int = 50_000, uses: int = 50_000) -> bytes:
    """One large entity used many times: size × uses characters, no nesting at all."""
    return (f'<?xml version="1.0"?><!DOCTYPE {root} [<!ENTITY a "{"x" * size}">]>'
            f"<{root}><title>{'&a;' * uses}</title></{root}>").encode()


def deep(levels: int, inner: str = "", tag: str = "a") -> bytes:
    return (f"<{tag}>" * levels + inner + f"</{tag}>" * levels).encode()


# -- what a listener that must never hear from the server answers ----------------------------
# a little XML holding MARKER, for whatever was fetched (an entity declaration, a document, a
# stylesheet): tests/support.py `Listener(LEAK)`
LEAK = f'<!ENTITY leak "{MARKER}"><leak>{MARKER}</leak>'.encode()


def checked_at_most(codes: list[int], attempts: int) -> int:
    """How many of the answers were checked (200 or 401), asserting the bound: `attempts` a
    window. Arrival is not the order the requests were made in: when the right password was
    among the first checked, its success starts a new count (as the owner's sign-in does), so
    the bound is then `attempts` before it and `attempts` after."""
    made = len([c for c in codes if c in (200, 401)])
    bound = 2 * attempts if 200 in codes else attempts
    assert made <= bound, codes
    assert codes.count(429) >= len(codes) - bound, codes
    return made
