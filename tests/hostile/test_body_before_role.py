"""A start's body costs the server nothing until the caller may start something there.

Attack (reported): a signed-in account with no role in a group POSTs a 76 MB `<job>` body of
millions of `<p/>` to that group; the server read all of it and parsed it on the event loop
before answering 403 (/health stalled, memory 250 MB -> 2.6 GB). Multipart uploads from a
non-member were read in full too.

What holds now, on a real server: the 401 (no credentials), the 403 (a non-member, a member
whose role starts no job, a role below the job named in the query or in a form's first part,
a non-administrator at server level) arrives while the client is still sending, with
`Connection: close`, and the server then closes the connection: the rest of the body is never
read. Framings: Content-Length and chunked; bodies: XML, multipart (the job first or later),
urlencoded. An allowed member's hostile XML (millions of elements, a huge attribute or text,
a `<param>` holding elements) is a 413 or 400 error document read no further than 1 MiB, and
the server's memory and /health stay fine meanwhile. A chunked form with a field above 1 MiB,
or beyond `max-upload`, is 413 `0206` (the form parser answered 400). At most
`max-large-bodies` large bodies are read at once: another waits, then gets 503 with
Retry-After; a small body is never held up.
"""

from __future__ import annotations

import base64
import re
import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.hostile.payloads import GROUP, check_error, still_serving, thread_total
from tests.support import Server, password, running_server

pytestmark = pytest.mark.slow

MAX_UPLOAD = 40 * 1024 * 1024
DECLARED = 32 * 1024 * 1024  # under max-upload: only the role can refuse it early
READ_TIMEOUT = 3.0
SLOTS = 2


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, str]]]:
    yield from running_server(
        tmp_path_factory.mktemp("body-before-role"),
        **{"jobs": ["tests.hostile.reviewer_jobs"], "max-upload": MAX_UPLOAD,
           "max-large-bodies": SLOTS, "read-timeout": READ_TIMEOUT, "max-running": 8},
    )


# -- a client that keeps sending until it is answered ------------------------------------------
def _auth(user: str | None) -> bytes:
    if user is None:
        return b""
    return b"Authorization: Basic %s\r\n" % base64.b64encode(f"{user}:{password(user)}".encode())


class Race:
    """What came back while a body was being sent, and how much of the body had gone."""

    def __init__(self) -> None:
        self.answer = b""
        self.sent = 0
        self.finished_sending = False
        self.closed = False  # the server closed (or reset) the connection after answering


def send_until_answered(server: Server, path: str, user: str | None, content_type: str,
                        body: Iterator[bytes], chunked: bool, length: int = DECLARED,
                        cookie: str | None = None) -> Race:
    framing = b"Transfer-Encoding: chunked\r\n" if chunked else b"Content-Length: %d\r\n" % length
    credentials = _auth(user) if cookie is None else b"Cookie: %s\r\n" % cookie.encode()
    head = (b"POST %s HTTP/1.1\r\nHost: x\r\n" % path.encode() + credentials
            + b"Content-Type: " + content_type.encode() + b"\r\n" + framing + b"\r\n")
    race = Race()
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(head)
    sock.setblocking(False)
    pending = b""
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            want_write = not race.finished_sending and not race.closed
            readable, writable, _ = select.select([sock], [sock] if want_write else [], [], 1)
            if readable:
                try:
                    data = sock.recv(65536)
                except ConnectionResetError:
                    data = b""
                if not data:
                    race.closed = True
                    return race
                race.answer += data
                continue
            if writable:
                if not pending:
                    part = next(body, None)
                    if part is None:
                        race.finished_sending = True
                        if chunked:
                            sock.setblocking(True)
                            sock.sendall(b"0\r\n\r\n")
                            sock.setblocking(False)
                        continue
                    pending = b"%x\r\n%s\r\n" % (len(part), part) if chunked else part
                try:
                    sent = sock.send(pending)
                except (BrokenPipeError, ConnectionResetError):
                    race.closed = True
                    return race
                race.sent += sent
                pending = pending[sent:]
        raise AssertionError(f"no answer in time: {race.answer[:300]!r}")
    finally:
        sock.close()


def xml_bomb(total: int = DECLARED) -> Iterator[bytes]:
    """`<job name="sleep">` then `<p/>` until `total` bytes (never closed: it need not be)."""
    yield b'<job name="sleep">'
    sent = 18
    block = b"<p/>" * 16384
    while sent + len(block) <= total:
        yield block
        sent += len(block)
    yield b" " * (total - sent)


BOUNDARY = "b0undary"


def multipart(parts: list[tuple[str, bytes, str | None]], total: int = DECLARED) -> Iterator[bytes]:
    """The given parts, then one file padded so that the body is `total` bytes long."""
    out = b""
    for name, value, filename in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += (f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n").encode()
        out += value + b"\r\n"
    out += f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="documents"; filename="d.xml"\r\n\r\n'.encode()
    end = f"\r\n--{BOUNDARY}--\r\n".encode()
    yield out
    sent = len(out)
    block = b"z" * 262144
    while sent + len(block) + len(end) <= total:
        yield block
        sent += len(block)
    yield b"z" * (total - sent - len(end)) + end


def urlencoded(total: int = DECLARED) -> Iterator[bytes]:
    yield b"job=sleep&seconds=0&result="
    sent = 27
    block = b"a" * 262144
    while sent + len(block) <= total:
        yield block
        sent += len(block)
    yield b"a" * (total - sent)


MP = f"multipart/form-data; boundary={BOUNDARY}"
# (who, path, content type, body, status, error id)
REFUSED = {
    "outsider-xml": ("outsider", f"{GROUP}/threads", "application/xml", xml_bomb, 403, "0101"),
    "anonymous-xml": (None, f"{GROUP}/threads", "application/xml", xml_bomb, 401, "0100"),
    "wrong-password": ("nobody", f"{GROUP}/threads", "application/xml", xml_bomb, 401, "0100"),
    "reviewer-job-in-query": ("reviewer", f"{GROUP}/threads?job=sleep", "application/xml",
                              xml_bomb, 403, "0101"),
    "outsider-multipart": ("outsider", f"{GROUP}/threads", MP,
                           lambda: multipart([("job", b"validate", None)]), 403, "0101"),
    "reviewer-job-first-part": ("reviewer", f"{GROUP}/threads", MP,
                                lambda: multipart([("job", b"validate", None)]), 403, "0101"),
    "reviewer-job-after-a-field": ("reviewer", f"{GROUP}/threads", MP,
                                   lambda: multipart([("schema-type", b"xsd", None),
                                                      ("job", b" validate ", None)]), 403, "0101"),
    "reviewer-job-after-a-small-file": ("reviewer", f"{GROUP}/threads", MP,
                                        lambda: multipart([("schema", b"<x/>", "s.xsd"),
                                                           ("job", b"validate", None)]),
                                        403, "0101"),
    "outsider-urlencoded": ("outsider", f"{GROUP}/threads", "application/x-www-form-urlencoded",
                            urlencoded, 403, "0101"),
    "reviewer-urlencoded": ("reviewer", f"{GROUP}/threads", "application/x-www-form-urlencoded",
                            urlencoded, 403, "0101"),
    "contributor-at-server-level": ("contributor", "/ps/service/threads", "application/xml",
                                    xml_bomb, 403, "0101"),
    "outsider-odd-type": ("outsider", f"{GROUP}/threads", "text/plain", xml_bomb, 403, "0101"),
}


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("case", sorted(REFUSED))
def test_a_caller_who_may_not_start_is_refused_while_still_sending(
    server: Server, case: str, chunked: bool
) -> None:
    user, path, content_type, body, status, error_id = REFUSED[case]
    before = thread_total(server)
    race = send_until_answered(server, path, user, content_type, body(), chunked)
    head, _, document = race.answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 %d " % status), race.answer[:300]
    assert b"connection: close" in head.lower(), head
    assert f'id="{error_id}"'.encode() in document, document
    assert not race.finished_sending and race.sent < DECLARED, race.sent  # refused mid-body
    print(f"{case} {'chunked' if chunked else 'length'}: {race.sent // 1024} kB sent of "
          f"{DECLARED // 1024} kB when refused")
    assert race.closed  # and the rest of it is never read
    assert thread_total(server) == before


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("user", ["outsider", "reviewer"])
def test_the_console_start_form_refuses_before_reading_the_upload(
    server: Server, user: str, chunked: bool
) -> None:
    """The console's start form (session cookie, CSRF token in the form) is held to the same
    rule: a signed-in non-member's, or a reviewer's, upload is refused unread."""
    with httpx.Client(base_url=server.url, timeout=30, follow_redirects=False) as browser:
        form = browser.get("/ps/ui/sign-in")
        token = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert token, form.text[:500]
        signed = browser.post("/ps/ui/sign-in", data={
            "csrf": token.group(1), "username": user, "password": password(user)})
        assert signed.status_code == 303, signed.text[:500]
        cookie = "; ".join(f"{name}={value}" for name, value in browser.cookies.items())
        page = browser.get("/ps/ui/groups")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf, page.text[:500]
    before = thread_total(server)
    body = multipart([("csrf", csrf.group(1).encode(), None), ("job", b"validate", None)])
    race = send_until_answered(server, "/ps/ui/groups/dev/start", None, MP, body, chunked,
                               cookie=cookie)
    head = race.answer.partition(b"\r\n\r\n")[0]
    assert head.startswith(b"HTTP/1.1 403 "), race.answer[:300]
    assert b"connection: close" in head.lower(), head
    assert not race.finished_sending and race.sent < DECLARED, race.sent
    assert race.closed
    assert thread_total(server) == before


def test_a_member_with_the_role_still_starts_every_way(server: Server) -> None:
    """The early checks refuse only whom they must: the reviewer's own job, by query, XML and
    form; a contributor's job by multipart with the job as a later part."""
    with server.client("reviewer") as http:
        for answer in (
            http.post(f"{GROUP}/threads", data={"job": "note", "text": "a"}),
            http.post(f"{GROUP}/threads?job=note", data={"text": "b"}),
            http.post(f"{GROUP}/threads", content=b'<job name="note"/>',
                      headers={"Content-Type": "application/xml"}),
        ):
            assert answer.status_code == 202, answer.text
    with server.client("contributor") as http:
        answer = http.post(f"{GROUP}/threads",
                           files=[("seconds", (None, b"0")), ("result", (None, b"r")),
                                  ("job", (None, b"sleep"))])
        assert answer.status_code == 202, answer.text


def test_an_unknown_job_in_the_query_is_400_before_the_body(server: Server) -> None:
    race = send_until_answered(server, f"{GROUP}/threads?job=nosuch", "contributor",
                               "application/xml", xml_bomb(), chunked=False)
    assert race.answer.startswith(b"HTTP/1.1 400 "), race.answer[:300]
    assert b'id="0205"' in race.answer and not race.finished_sending


# -- an allowed member's hostile XML ----------------------------------------------------------
def _rss_kb(server: Server) -> int:
    assert server.process is not None
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))


def test_millions_of_elements_from_a_member_cost_nothing(server: Server) -> None:
    """The reported body, from a contributor (who may start `sleep`): 413 after at most 1 MiB,
    while /health keeps answering; the server's memory does not follow the body."""
    rss_before = _rss_kb(server)
    latencies: list[float] = []
    stop = threading.Event()

    def poll_health() -> None:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            while not stop.is_set():
                began = time.monotonic()
                assert http.get("/health").status_code == 200
                latencies.append(time.monotonic() - began)
                time.sleep(0.02)

    poller = threading.Thread(target=poll_health)
    poller.start()
    try:
        while not latencies and poller.is_alive():
            time.sleep(0.01)
        for chunked in (False, True) * 3:
            race = send_until_answered(server, f"{GROUP}/threads", "contributor",
                                       "application/xml", xml_bomb(), chunked)
            head, _, document = race.answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 413 "), race.answer[:300]
            # The server closes while the client still sends, so the client's socket may be
            # reset before the document behind the status line is read; when it came, it is
            # the 0206 error.
            assert not document or b'id="0206"' in document, document[:300]
            assert not race.finished_sending
    finally:
        stop.set()
        poller.join()
    rss_after = _rss_kb(server)
    print(f"\nRSS {rss_before // 1024} MB -> {rss_after // 1024} MB; /health during: "
          f"{len(latencies)} answers, slowest {max(latencies) * 1000:.0f} ms")
    assert rss_after - rss_before < 100 * 1024  # the report: +2.3 GB
    still_serving(server)


def _xml(http: httpx.Client, body: bytes) -> httpx.Response:
    return http.post(f"{GROUP}/threads", content=body, headers={"Content-Type": "application/xml"})


@pytest.mark.parametrize("body", [
    b'<job name="sleep">' + b"<p/>" * 200_000 + b"</job>",  # 800 kB: under the byte cap
    b'<job name="sleep">' + b'<param name="seconds">0</param>' * 1001 + b"</job>",
    b'<job name="sleep"><param name="result" value="' + b"v" * 2_000_000 + b'"/></job>',
    b'<job name="sleep"><param name="result">' + b"t" * 2_000_000 + b"</param></job>",
    b'<job name="sleep" x="' + b"n" * 1_100_000 + b'"/>',
], ids=["200k-elements", "1001-params", "2MB-attribute", "2MB-text", "1MB-attribute-on-job"])
def test_hostile_xml_from_a_member_is_413(server: Server, body: bytes) -> None:
    before = thread_total(server)
    with server.client("contributor") as http:
        check_error(_xml(http, body), 413, "0206")
    assert thread_total(server) == before


@pytest.mark.parametrize("param", [
    b"a<b>x</b>c", b"<b/>", b"a<b>x</b>", b"<!-- c --><b>x</b>", b"a<b><c>deep</c></b>",
])
def test_a_param_holding_elements_is_400(server: Server, param: bytes) -> None:
    before = thread_total(server)
    with server.client("contributor") as http:
        body = b'<job name="sleep"><param name="result">' + param + b"</param></job>"
        check_error(_xml(http, body), 400, "0201", "result")
    assert thread_total(server) == before


def test_text_around_comments_is_still_one_value(server: Server) -> None:
    with server.client("contributor") as http:
        answer = _xml(http, b'<job name="sleep"><param name="seconds">0<!-- x -->.1</param>'
                            b'<param name="result">a<![CDATA[<b>]]>c</param></job>')
        assert answer.status_code == 202, answer.text


# -- chunked forms beyond the limits -----------------------------------------------------------
def _chunks(total: int, head: bytes, tail: bytes = b"") -> Iterator[bytes]:
    yield head
    sent = len(head)
    while sent < total:
        yield b"q" * 262144
        sent += 262144
    yield tail


@pytest.mark.parametrize("kind", ["urlencoded-field", "multipart-field", "multipart-file"])
def test_a_chunked_form_beyond_max_upload_is_413(server: Server, kind: str) -> None:
    before = thread_total(server)
    with server.client("contributor", timeout=60) as http:
        if kind == "urlencoded-field":
            answer = http.post(f"{GROUP}/threads", content=_chunks(MAX_UPLOAD + 1, b"job=sleep&result="),
                               headers={"Content-Type": "application/x-www-form-urlencoded"})
        else:
            filename = '; filename="f.txt"' if kind == "multipart-file" else ""
            head = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="job"\r\n\r\nsleep\r\n'
                    f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="result"{filename}'
                    "\r\n\r\n").encode()
            answer = http.post(f"{GROUP}/threads", content=_chunks(MAX_UPLOAD + 1, head,
                                                                   f"\r\n--{BOUNDARY}--\r\n".encode()),
                               headers={"Content-Type": MP})
        check_error(answer, 413, "0206")
    assert thread_total(server) == before


@pytest.mark.parametrize("kind", ["urlencoded", "multipart"])
def test_a_text_field_above_1_mib_is_413_however_framed(server: Server, kind: str) -> None:
    with server.client("contributor") as http:
        if kind == "urlencoded":
            body = b"job=sleep&result=" + b"r" * (1024 * 1024 + 1)
            for content in (body, iter([body[:1000], body[1000:]])):
                check_error(http.post(f"{GROUP}/threads", content=content,
                                      headers={"Content-Type": "application/x-www-form-urlencoded"}),
                            413, "0206")
        else:
            check_error(http.post(f"{GROUP}/threads",
                                  files=[("job", (None, b"sleep")),
                                         ("result", (None, b"r" * (1024 * 1024 + 1)))]),
                        413, "0206")


# -- a bounded number of large bodies at once ---------------------------------------------------
class SlowUpload(threading.Thread):
    """A contributor's chunked multipart start, sent at a steady 1.6 MB/s until `release`."""

    def __init__(self, server: Server) -> None:
        super().__init__()
        self.server, self.release, self.status = server, threading.Event(), 0
        self.reading = threading.Event()  # set once the server has taken some of it

    def run(self) -> None:
        def body() -> Iterator[bytes]:
            yield (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="job"\r\n\r\nsleep\r\n'
                   f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="documents"; '
                   'filename="f.txt"\r\n\r\n').encode()
            sent = 0
            while not self.release.is_set():
                yield b"s" * 32768
                sent += 32768
                if sent > 1024 * 1024:
                    self.reading.set()  # well under way: the server has started reading it
                time.sleep(0.02)
            yield f"\r\n--{BOUNDARY}--\r\n".encode()

        with self.server.client("contributor", timeout=60) as http:
            self.status = http.post(f"{GROUP}/threads", content=body(),
                                    headers={"Content-Type": MP}).status_code


def test_only_a_few_large_bodies_are_read_at_once(server: Server) -> None:
    holders = [SlowUpload(server) for _ in range(SLOTS)]
    for holder in holders:
        holder.start()
    try:
        for holder in holders:
            assert holder.reading.wait(60), "the server does not read a large body"
        with server.client("contributor", timeout=60) as http:
            # a small body is not held up
            small = http.post(f"{GROUP}/threads", data={"job": "sleep", "seconds": "0"})
            assert small.status_code == 202, small.text
            # a large one waits for a slot, then is turned away: every slot stayed taken
            big = b"job=sleep&seconds=0&result=" + b"b" * (2 * 1024 * 1024)
            busy = http.post(f"{GROUP}/threads", content=big,
                             headers={"Content-Type": "application/x-www-form-urlencoded"})
            check_error(busy, 503, "0503")
            assert busy.headers["retry-after"].isdigit()
            assert busy.headers["connection"] == "close"
    finally:
        for holder in holders:
            holder.release.set()
        for holder in holders:
            holder.join()
    # the holders were read to their end (400: `documents` is no parameter of sleep)
    assert [holder.status for holder in holders] == [400] * SLOTS
    with server.client("contributor", timeout=60) as http:  # slots are free again
        document = b"<a>" + b"z" * 1_100_000 + b"</a>"
        for _ in range(SLOTS + 1):
            answer = http.post(f"{GROUP}/threads", data={"job": "validate"},
                               files=[("documents", ("d.xml", document, "text/xml"))])
            assert answer.status_code == 202, answer.text
    still_serving(server)
