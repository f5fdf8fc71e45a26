"""What every answer of the fuzzed server must look like (docs/api.md#formats, #errors), for both fuzz modules.

`check_answer(method, path, status, headers, body, json_asked)` raises AssertionError naming
the problem: a 5xx, an error that is not an error document (or has the wrong Content-Type, the
wrong id for its status, no `<request>`, an empty `<message>`), or an XML answer that its
published schema rejects. `seed_world(server, tokens)` starts a few threads of every kind and
registers webhooks, so that fuzzed ids can hit real things.

A server bug the fuzzers found is pinned by a strict-xfail regression test in
tests/fuzz/test_findings.py and listed in KNOWN_BUGS, so that the fuzzers tolerate that one
failure (and count it) while it is open and keep looking for others. Once it is fixed, its
regression test XPASSes, which fails the run: remove the entry then.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote_to_bytes, urlsplit

import httpx
from lxml import etree

from tests.support import Server
from threadsvc.xml.schemas import validate

XML_TYPE = "application/xml;charset=utf-8"
JSON_TYPE = "application/json;charset=utf-8"
GROUP = "/ps/service/groups/dev"

# The error ids each 4xx/5xx status may carry (docs/api.md#errors; threadsvc/web/errors.py TABLE adds
# 0204 unknown path, 0208 conflict, 0302 too many open event streams).
ERROR_IDS: dict[int, frozenset[str]] = {
    400: frozenset({"0201", "0205"}),
    401: frozenset({"0100"}),
    403: frozenset({"0101", "0400"}),
    404: frozenset({"0202", "0203", "0204", "0207"}),
    405: frozenset({"0103"}),
    409: frozenset({"0208", "0402", "0403"}),
    410: frozenset({"0401"}),
    413: frozenset({"0206"}),
    429: frozenset({"0300", "0301", "0302", "0303"}),
    503: frozenset({"0503"}),
}
_ROOTS_WITH_SCHEMA = ("thread", "threads", "thread-cancel", "logs", "error", "webhook", "webhooks")
_SCHEMA_LOCK = threading.Lock()  # validate() is for one OS thread at a time per schema
# Answers checked in this process, by status (shown at the end of the run by conftest.py).
ANSWERS: Counter[int] = Counter()
# THREADSVC_FUZZ_KEEP_GOING=1 (for exploring): a bad answer is recorded here, shown at the end
# of the run, and the property goes on, instead of failing at the first one.
KEEP_GOING = os.environ.get("THREADSVC_FUZZ_KEEP_GOING", "") not in ("", "0")
FINDINGS: list[str] = []
# Answers that matched a KNOWN_BUGS entry, by that entry's regression test.
KNOWN: Counter[str] = Counter()


@dataclass(frozen=True)
class Sent:
    """What the client sent, as far as the known-bug matchers need it."""

    method: str
    target: str  # path and query, as sent (percent-encoded)
    headers: Mapping[str, str]
    body: bytes

    def query(self) -> list[tuple[str, str]]:
        return parse_qsl(urlsplit(self.target).query, keep_blank_values=True)

    def holds_nul(self) -> bool:
        """A NUL anywhere in the path, query, body (raw or %-encoded) or Basic credentials."""
        if b"\x00" in unquote_to_bytes(self.target) or b"\x00" in self.body:
            return True
        if b"\x00" in unquote_to_bytes(self.body.replace(b"+", b" ")):
            return True
        for name, value in self.headers.items():
            if name.lower() == "authorization" and value[:6].lower() == "basic ":
                try:
                    if b"\x00" in base64.b64decode(value[6:].strip(), validate=True):
                        return True
                except (binascii.Error, ValueError):
                    pass
        return False


# regression test in tests/fuzz/test_findings.py -> does this answer show that bug?
KNOWN_BUGS: dict[str, Callable[[Sent, int], bool]] = {}  # none open


def known_bug(sent: Sent | None, status: int) -> str | None:
    if sent is None or status < 500:
        return None
    return next((name for name, matches in KNOWN_BUGS.items() if matches(sent, status)), None)


def json_asked(path: str, headers: Mapping[str, str]) -> bool:
    """Whether the request may be answered in JSON: a `.json` suffix, or an Accept naming JSON.
    (Whether JSON is *preferred* is the server's call; a JSON error is fine when JSON was named.)"""
    accept = next((v for k, v in headers.items() if k.lower() == "accept"), "")
    return path.split("?", 1)[0].endswith(".json") or "json" in str(accept).lower()


def check_answer(
    method: str,
    path: str,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    json_asked: bool,
    sent: Sent | None = None,
    count: bool = True,
) -> None:
    """Raise AssertionError when the answer breaks docs/api.md#formats, #errors (unless it shows a known bug).
    `count`: add it to the figures shown at the end of the run (not for regression tests)."""
    if count:
        ANSWERS[status] += 1
    bug = known_bug(sent, status)
    if bug is not None:
        KNOWN[bug] += 1
        return
    try:
        _check_answer(method, path, status, headers, body, json_asked)
    except AssertionError as exc:
        if not KEEP_GOING:
            raise
        FINDINGS.append(str(exc))


def _check_answer(
    method: str,
    path: str,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    json_asked: bool,
) -> None:
    where = f"{method} {path[:300]!r} answered {status}"
    # Not even 503: the fuzzed server's store is up, so a 503 means a request was mistaken
    # for a store failure.
    assert status < 500, f"{where}: {body[:500]!r}"
    content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), None)
    if status >= 400:
        if method == "HEAD":
            return
        assert content_type in (XML_TYPE, JSON_TYPE), (
            f"{where} with Content-Type {content_type!r}, not an error document: {body[:300]!r}"
        )
        if content_type == JSON_TYPE:
            assert json_asked, f"{where} in JSON although JSON was not asked for"
            error_id = _check_json_error(where, body)
        else:
            error_id = _check_xml_error(where, body)
        expected = ERROR_IDS.get(status)
        assert expected is not None, f"{where}: a status docs/api.md#errors does not list"
        assert error_id in expected, (
            f"{where} with error id {error_id}, not one of {sorted(expected)}"
        )
        if status == 401:
            assert any(k.lower() == "www-authenticate" for k in headers), (
                f"{where} without WWW-Authenticate"
            )
    elif content_type is not None and content_type.startswith("application/xml"):
        assert content_type == XML_TYPE, f"{where} with Content-Type {content_type!r}"
        _check_valid_xml(where, body)


def _check_xml_error(where: str, body: bytes) -> str:
    _check_valid_xml(where, body)
    root = etree.fromstring(body)
    assert root.tag == "error", f"{where} with <{root.tag!s}>, not <error>"
    request = root.findtext("request")
    message = root.findtext("message")
    assert request is not None and request.startswith("/"), f"{where}: <request> is {request!r}"
    assert message is not None and message.strip(), f"{where}: <message> is {message!r}"
    return str(root.get("id"))


def _check_json_error(where: str, body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise AssertionError(
            f"{where} with a JSON body that does not parse ({exc}): {body[:300]!r}"
        ) from None
    assert isinstance(data, dict) and set(data) == {"error"}, f"{where}: {body[:300]!r}"
    error = data["error"]
    assert isinstance(error, dict), f"{where}: {body[:300]!r}"
    assert {"id", "request", "message"} <= set(error), f"{where}: {body[:300]!r}"
    assert isinstance(error["id"], str) and re.fullmatch(r"[0-9]{4}", error["id"]), (
        f"{where}: {error!r}"
    )
    assert isinstance(error["request"], str) and error["request"].startswith("/"), (
        f"{where}: {error!r}"
    )
    assert isinstance(error["message"], str) and error["message"].strip(), f"{where}: {error!r}"
    return error["id"]


def _check_valid_xml(where: str, body: bytes) -> None:
    try:
        root = etree.fromstring(body)
    except etree.XMLSyntaxError as exc:
        raise AssertionError(
            f"{where} with XML that is not well-formed ({exc}): {body[:300]!r}"
        ) from None
    if root.tag not in _ROOTS_WITH_SCHEMA:
        return
    with _SCHEMA_LOCK:
        try:
            validate(body)
        except ValueError as exc:
            raise AssertionError(
                f"{where} with an invalid <{root.tag}>: {exc}\n{body[:500]!r}"
            ) from None


# -- a world with things in it -------------------------------------------------------------------
@dataclass
class Seeded:
    """Ids of what `seed_world` made: threads in group dev, other and at server level,
    webhooks, and a pre-signed result token."""

    dev_threads: list[str] = field(default_factory=list)
    other_threads: list[str] = field(default_factory=list)
    server_threads: list[str] = field(default_factory=list)
    webhooks: list[str] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)

    @property
    def thread_ids(self) -> list[str]:
        return [*self.dev_threads, *self.other_threads, *self.server_threads]


def _start(http: httpx.Client, path: str, **fields: str) -> str:
    response = http.post(path, data={"job": "sleep", **fields})
    assert response.status_code == 202, response.text
    return str(etree.fromstring(response.content).get("id"))


def _final(http: httpx.Client, path: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        text = http.get(path).text
        if any(f'status="{s}"' in text for s in ("completed", "failed", "cancelled")):
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} never finished")


def seed_world(server: Server, webhooks: bool = True) -> Seeded:
    """Threads in every state a client can meet, in dev, in other and at server level; a
    group and a server webhook (when `webhooks`: the server must have webhook-allow-private,
    the URL is a closed local port); a pre-signed link to a result. A running thread changes
    every ~0.4 s, so long-polls on it return quickly."""
    seeded = Seeded()
    with (
        server.client("contributor") as dev,
        server.client("othermgr") as other,
        server.client("admin") as admin,
        server.client("manager") as manager,
    ):
        finished = [
            _start(dev, f"{GROUP}/threads", seconds="0", steps="1", result="hello"),
            _start(dev, f"{GROUP}/threads", seconds="0", steps="2", fail="1"),
            _start(dev, f"{GROUP}/threads", seconds="0", steps="2", warn="1", error="2"),
            _start(manager, f"{GROUP}/threads", seconds="0", steps="1"),
        ]
        cancelled = _start(dev, f"{GROUP}/threads", seconds="3600", steps="10")
        dev.post(f"{GROUP}/threads/{cancelled}/cancel")
        running = _start(dev, f"{GROUP}/threads", seconds="3600", steps="10000")
        seeded.dev_threads = [*finished, cancelled, running]
        for tid in [*finished, cancelled]:
            _final(dev, f"{GROUP}/threads/{tid}/progress")
        other_done = _start(other, "/ps/service/groups/other/threads", seconds="0", result="x")
        seeded.other_threads = [other_done]
        server_done = _start(admin, "/ps/service/threads", seconds="0", steps="1", result="srv")
        server_running = _start(admin, "/ps/service/threads", seconds="3600", steps="10000")
        seeded.server_threads = [server_done, server_running]
        _final(admin, f"/ps/service/threads/{server_done}/progress")
        for tid, client, base in ((finished[0], dev, GROUP), (server_done, admin, "/ps/service")):
            link = client.get(f"{base}/threads/{tid}/result")
            assert link.status_code == 302, link.text
            seeded.tokens.append(link.headers["location"].rsplit("/", 1)[-1])
        hook = {"url": "http://127.0.0.1:9/hook", "secret": "s3cret-of-16-chars", "events": "all"}
        for client, base in ((manager, GROUP), (admin, "/ps/service")) if webhooks else ():
            response = client.post(f"{base}/webhooks", data=hook)
            assert response.status_code == 201, response.text
            seeded.webhooks.append(str(etree.fromstring(response.content).get("id")))
    return seeded
