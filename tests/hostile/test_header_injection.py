"""Header injection: CR, LF and other control characters in whatever the server may copy into
a response header: a result's file name and media type (Content-Disposition, Content-Type of
the download), the group and thread in Location and Content-Location, the Idempotency-Key,
the console's `next=` and the path it sends a signed-out visitor back to, a webhook's URL
(the Host of its deliveries), the Host a pre-signed link is built from. No answer ever holds a
header the client wrote: each is checked on the raw bytes of the response head.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest

from tests.hostile.payloads import GROUP, check_error, finish, thread_total
from tests.support import Server, running_server

INJECTED = "X-Injected"
CRLF_VALUES = [
    "a\r\nX-Injected: 1",
    "a\nX-Injected: 1",
    "a\rX-Injected: 1",
    "a\r\n\r\n<html>body</html>",
    "a\x00b",
    "a\x0bb\x0cc\x1b[31m",
    "a\u2028X-Injected: 1",  # a Unicode line separator
    "a\u0085X-Injected: 1",  # NEL
    'a"; filename="evil.sh',
    "../../etc/passwd",
    "ü\r\nX-Injected: 1.txt",
]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, str]]]:
    yield from running_server(tmp_path_factory.mktemp("headers"),
                              **{"jobs": ["tests.hostile.jobs"], "max-running": 16})


def raw_head(server: Server, request: bytes) -> list[bytes]:
    """The header lines of the answer to `request`, as the bytes on the wire."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=15) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")


def assert_not_split(response: httpx.Response) -> None:
    assert INJECTED.lower() not in {name.lower() for name in response.headers}, response.headers
    for name, value in response.headers.multi_items():
        assert not re.search(r"[\x00-\x08\x0a-\x1f\x7f]", name + value), (name, value)


def start_named(http: httpx.Client, name: str, media: str = "text/plain") -> httpx.Response:
    return http.post(f"{GROUP}/threads", data={"job": "named-result", "name": name,
                                               "media": media})


# -- the download's headers -------------------------------------------------------------------
@pytest.mark.parametrize("name", CRLF_VALUES)
def test_result_file_names_never_split_content_disposition(server: Server, name: str) -> None:
    with server.client("contributor") as http:
        started = start_named(http, name)
        if "\x00" in name:  # no text parameter holds a NUL
            check_error(started, 400, "0201", "name")
            return
        assert started.status_code == 202, started.text
        tid = started.text.split('id="', 1)[1][:32]
        assert finish(http, tid).get("status") == "completed"
        link = http.get(f"{GROUP}/threads/{tid}/result")
        assert link.status_code == 302
        assert_not_split(link)
    token = link.headers["location"].rsplit("/", 1)[1]
    lines = raw_head(server, f"GET /ps/service/results/{token} HTTP/1.1\r\nHost: x\r\n"
                             "Connection: close\r\n\r\n".encode())
    assert lines[0] == b"HTTP/1.1 200 OK", lines
    assert not [line for line in lines if line.lower().startswith(b"x-injected")], lines
    [disposition] = [line for line in lines if line.lower().startswith(b"content-disposition:")]
    # threadsvc.results.download_name: only [A-Za-z0-9._-] reach the header
    assert re.fullmatch(rb'content-disposition: attachment; filename="[A-Za-z0-9._-]+"',
                        disposition, re.IGNORECASE), disposition


MEDIA = ["text/plain\r\nX-Injected: 1", "text/html\nX-Injected: 1", "text/plain\x01"]


def start_with_media(server: Server, media: str) -> str:
    with server.client("contributor") as http:
        started = start_named(http, "r.txt", media)
        assert started.status_code == 202, started.text
        tid = started.text.split('id="', 1)[1][:32]
        assert finish(http, tid, timeout=20).get("status") == "completed"
    return tid


@pytest.mark.parametrize("media", MEDIA)
def test_a_media_type_with_control_characters_leaves_the_thread_readable(
    server: Server, media: str
) -> None:
    """Regression: a job that gave such a media type (tests/hostile/jobs.py passes the caller's
    text) made every document showing its thread's <result> a 500 (lxml refuses control
    characters), the group's and the server's lists included. threadsvc/xml/render.py now
    writes the characters XML cannot hold as U+FFFD, as it does for messages."""
    tid = start_with_media(server, media)
    with server.client("contributor") as http:
        progress = http.get(f"{GROUP}/threads/{tid}/progress")
        assert progress.status_code == 200, progress.text
        shown = re.search(r'media-type="([^"]*)"', progress.text)
        assert shown and "X-Injected" not in progress.headers, progress.text
        assert "\ufffd" in shown.group(1) or "&#10;" in shown.group(1) or "&#13;" in shown.group(1)
        assert http.get(f"{GROUP}/threads", params={"status": "all"}).status_code == 200
    with server.client("admin") as admin:
        assert admin.get("/ps/service/threads", params={"status": "all"}).status_code == 200


@pytest.mark.parametrize("media", MEDIA)
def test_a_media_type_with_control_characters_still_downloads(server: Server,
                                                              media: str) -> None:
    tid = start_with_media(server, media)
    with server.client("contributor") as http:
        link = http.get(f"{GROUP}/threads/{tid}/result").headers["location"]
    try:
        download = httpx.get(link)
    except httpx.TransportError as exc:  # what happened before the fix: a dropped connection
        raise AssertionError(f"no answer: {exc!r}") from None
    assert download.status_code == 200
    assert download.headers["content-type"] == "application/octet-stream"
    assert_not_split(download)


# -- Location, Content-Location, Idempotency-Key ----------------------------------------------
@pytest.mark.parametrize("key", ["a\x01b", "a\x7fb", "a b", "k" * 256, "é", "a\tb"])
def test_idempotency_keys_with_odd_characters_are_400(server: Server, key: str) -> None:
    before = thread_total(server)
    with server.client("contributor") as http:
        response = http.post(f"{GROUP}/threads", data={"job": "sleep", "seconds": "0"},
                             headers=[(b"Idempotency-Key", key.encode("utf-8"))])
    # The parser refuses a control character before the application sees which header held
    # it (httptools); elsewhere the application names the header.
    root = check_error(response, 400, "0201")
    message = root.findtext("message")
    assert "Idempotency-Key" in message or "a header holds a character" in message, message
    assert_not_split(response)
    assert thread_total(server) == before


def test_a_crlf_idempotency_key_on_the_wire_is_only_two_headers(server: Server) -> None:
    """A client that writes CR LF inside its own header value writes two headers: the key ends
    at the CR LF, and nothing of it comes back in the answer's head."""
    body = b"job=sleep&seconds=0"
    request = (b"POST /ps/service/groups/dev/threads HTTP/1.1\r\nHost: x\r\n"
               b"Authorization: Basic Y29udHJpYnV0b3I6Y29udHJpYnV0b3ItcHc=\r\n"
               b"Content-Type: application/x-www-form-urlencoded\r\n"
               b"Idempotency-Key: k-hostile\r\nX-Injected: 1\r\n"
               b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
    lines = raw_head(server, request)
    assert lines[0] == b"HTTP/1.1 202 Accepted", lines
    assert not [line for line in lines if b"injected" in line.lower()], lines
    assert not [line for line in lines if b"k-hostile" in line], lines
    location = [line for line in lines if line.lower().startswith(b"location:")]
    assert len(location) == 1 and re.fullmatch(
        rb"location: http://x/ps/service/groups/dev/threads/[0-9a-f]{32}/result", location[0],
        re.IGNORECASE)


@pytest.mark.parametrize("group", ["dev%0D%0AX-Injected:%201", "dev%0AX-Injected:%201",
                                   "240%0D%0AX-Injected:%201", "%E2%80%A8dev"])
def test_group_references_with_crlf_never_reach_location(server: Server, group: str) -> None:
    with server.client("contributor") as http:
        response = http.post(f"/ps/service/groups/{group}/threads",
                             data={"job": "sleep", "seconds": "0"})
    check_error(response, 404, "0202")
    assert_not_split(response)
    assert "location" not in response.headers


def test_location_headers_hold_only_the_server_s_values(server: Server) -> None:
    """Started by the group's id or name, under either prefix: the links are built from the
    group's own name and the thread's id, never from the request's text."""
    with server.client("contributor") as http:
        for path in ("/ps/service/groups/240/threads", "/ps/api/groups/dev/threads"):
            response = http.post(path, data={"job": "sleep", "seconds": "0"})
            assert response.status_code == 202, response.text
            assert_not_split(response)
            for header in ("location", "content-location"):
                assert re.fullmatch(re.escape(server.url) +
                                    r"/ps/(service|api)/groups/(dev|240)/threads/[0-9a-f]{32}"
                                    r"(/result|/progress)", response.headers[header]), (
                    response.headers[header])


def test_a_hostile_host_header_cannot_split_the_presigned_redirect(server: Server) -> None:
    """The pre-signed link is built from the request's Host (docs/decisions.md): a Host with a
    CR LF cannot be sent (it ends the header), and a Host with other odd characters is
    refused (400) by uvicorn's parser or by the server, never a link nor a new header."""
    with server.client("contributor") as http:
        started = start_named(http, "r.txt")
        tid = started.text.split('id="', 1)[1][:32]
        finish(http, tid)
    for host in (b"evil.example\x0bX-Injected: 1", b"evil.example X-Injected: 1",
                 b"evil.example\x00"):
        lines = raw_head(server, b"GET " + f"{GROUP}/threads/{tid}/result".encode()
                         + b" HTTP/1.1\r\nHost: " + host
                         + b"\r\nAuthorization: Basic Y29udHJpYnV0b3I6Y29udHJpYnV0b3ItcHc=\r\n"
                         + b"Connection: close\r\n\r\n")
        assert lines[0].split(b" ", 2)[1] == b"400", lines
        assert not [line for line in lines if line.lower().startswith(b"x-injected")], lines
        for line in lines:
            assert not re.search(rb"[\x00-\x08\x0b-\x1f\x7f]", line), lines


# -- the console ------------------------------------------------------------------------------
def csrf_of(response: httpx.Response) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', response.text)
    assert found, response.text[:2000]
    return found.group(1)


@pytest.mark.parametrize("target", [
    "/ps/ui/groups\r\nX-Injected: 1", "/ps/ui/groups\nX-Injected: 1",
    "/ps/ui/groups%0d%0aX-Injected:%201", "/ps/ui/groups\x00", "/ps/ui/groups\u2028x",
])
def test_console_next_never_splits_its_redirect(server: Server, target: str) -> None:
    with httpx.Client(base_url=server.url, follow_redirects=False) as client:
        form = client.get("/ps/ui/sign-in", params={"next": target})
        assert form.status_code == 200
        assert_not_split(form)
        response = client.post("/ps/ui/sign-in", data={
            "csrf": csrf_of(form), "username": "reviewer", "password": "reviewer-pw",
            "next": target,
        })
    assert response.status_code == 303
    assert_not_split(response)
    location = response.headers["location"]
    assert location.startswith("/ps/ui/groups"), location  # the default, or escaped
    assert not re.search(r"[\x00-\x20\x7f-\uffff]", location), location


@pytest.mark.parametrize("path", ["/ps/ui/groups/dev%0D%0AX-Injected:%201/threads",
                                  "/ps/ui/groups/dev/threads%0AX-Injected:%201"])
def test_the_sign_in_redirect_escapes_the_path_it_returns_to(server: Server, path: str) -> None:
    """Signed out, a console page answers 303 to the sign-in with the path in `next`, escaped;
    (a page that cannot exist, a group name with a CR LF, is a 404 page at once)."""
    with httpx.Client(base_url=server.url, follow_redirects=False) as client:
        response = client.get(path)
    assert_not_split(response)
    assert response.status_code in (303, 404), response.status_code
    if response.status_code == 303:
        assert response.headers["location"].startswith("/ps/ui/sign-in?next=")
        assert quote("\n") in response.headers["location"]  # %0A stays escaped


# -- webhooks ---------------------------------------------------------------------------------
@pytest.mark.parametrize("url", ["http://8.8.8.8/a\r\nX-Injected: 1", "http://8.8.8.8/a\nb",
                                 "http://8.8.8.8\r\nX-Injected: 1/", "http://8.8.8.8/a\x00",
                                 "http://8.8.8.8/a b", "http://8.8.8.8/\x7f"])
def test_webhook_urls_with_control_characters_are_400(server: Server, url: str) -> None:
    with server.client("manager") as http:
        response = http.post(f"{GROUP}/webhooks", data={"url": url, "secret": "a-webhook-secret"})
        check_error(response, 400, "0201", "url")
        assert_not_split(response)
        listed = http.get(f"{GROUP}/webhooks")
        assert "8.8.8.8" not in listed.text
