"""Every URL the server sends, in a header (202 `Content-Location` and `Location`, 303, 302,
the 201 of a webhook) or as `<result href>`, is absolute: on `public-url` when it is set,
else on the request's scheme and host. X-Forwarded-Proto and X-Forwarded-Host count only
from the peers in `forwarded-allow-ips` (by default this machine, 127.0.0.1 and ::1; a client
bound to 127.0.0.2 stands for any other peer). A Host that is not a host name or address
(with a port) is a 400, never a 500, a link or a new header; a start with one starts nothing.
"""

from __future__ import annotations

import base64
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from tests.support import Server, password, running_server, thread_id, wait_final
from threadsvc.cli import main

GROUP = "/ps/service/groups/dev"
PUBLIC = "https://threads.example.org"
PROXY = "https://proxy.example:8443"
FORWARDED = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "proxy.example:8443"}
OTHER_PEER = "127.0.0.2"  # not in the default forwarded-allow-ips


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """No public-url, the default forwarded-allow-ips."""
    directory = tmp_path_factory.mktemp("plain")
    for server, _ in running_server(directory, **{"webhook-allow-private": True}):
        yield server


@pytest.fixture(scope="module")
def public(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("public")
    for server, _ in running_server(directory, **{"public-url": PUBLIC,
                                                  "webhook-allow-private": True}):
        yield server


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Only 127.0.0.2 is a trusted proxy: this machine's 127.0.0.1 is not."""
    directory = tmp_path_factory.mktemp("proxied")
    for server, _ in running_server(directory, **{"forwarded-allow-ips": [OTHER_PEER],
                                                  "webhook-allow-private": True}):
        yield server


def client(server: Server, user: str, source: str = "127.0.0.1",
           headers: dict[str, str] | None = None) -> httpx.Client:
    """A client of `server` signed in as `user`, connecting from `source`."""
    return httpx.Client(base_url=server.url, auth=(user, password(user)), timeout=30,
                        headers=headers, transport=httpx.HTTPTransport(local_address=source))


def every_url(server: Server, source: str = "127.0.0.1",
              headers: dict[str, str] | None = None) -> tuple[str, dict[str, str]]:
    """A thread started and driven to its result, and a webhook registered, by clients
    sending `headers` from `source`: the thread's id and every URL the answers held."""
    urls: dict[str, str] = {}
    with client(server, "contributor", source, headers) as http:
        started = http.post(f"{GROUP}/threads",
                            data={"job": "sleep", "seconds": "0", "result": "hello"})
        assert started.status_code == 202, started.text
        tid = thread_id(started)
        urls["202 Content-Location"] = started.headers["content-location"]
        urls["202 Location"] = started.headers["location"]
        final = wait_final(http, tid).text
        urls["progress <result href>"] = re.findall(r'<result href="([^"]+)"', final)[0]
        listed = http.get(f"{GROUP}/threads", params={"status": "all"}).text
        urls["list <result href>"] = re.findall(r'<result href="([^"]+)"', listed)[0]
        task = http.get(f"{GROUP}/threads/{tid}")
        assert task.status_code == 303, task.text
        urls["303 Location"] = task.headers["location"]
        result = http.get(f"{GROUP}/threads/{tid}/result")
        assert result.status_code == 302, result.text
        urls["302 Location"] = result.headers["location"]
    with client(server, "manager", source, headers) as http:
        made = http.post(f"{GROUP}/webhooks",
                         data={"url": "http://127.0.0.1:9/h", "secret": "k" * 16})
        assert made.status_code == 201, made.text
        urls["201 Location"] = made.headers["location"]
        hook = re.findall(r'<webhook\s(?:[^>]*\s)?id="([0-9]+)"', made.text)[0]
        assert http.delete(f"{GROUP}/webhooks/{hook}").status_code == 204
    return tid, urls


def check_on(base: str, tid: str, urls: dict[str, str]) -> dict[str, str]:
    """Every URL is `base` then the path it must be; the paths, to follow them here."""
    thread = f"{GROUP}/threads/{tid}"
    expected = {
        "202 Content-Location": f"{thread}/progress",
        "202 Location": f"{thread}/result",
        "303 Location": f"{thread}/result",
        "201 Location": f"{GROUP}/webhooks/",
    }
    paths = {}
    for name, url in urls.items():
        assert url.startswith(base + "/ps/service/"), (name, url)
        path = url.removeprefix(base)
        if name in expected:
            assert path.startswith(expected[name]), (name, url)
        else:
            assert re.fullmatch(r"/ps/service/results/[\w.-]+", path), (name, url)
        paths[name] = path
    return paths


def follow(server: Server, paths: dict[str, str]) -> None:
    """The URLs lead where they say, on this server (where a proxy would pass them on)."""
    with client(server, "contributor") as http:
        assert http.get(paths["202 Content-Location"]).status_code == 200
        assert http.get(paths["202 Location"]).status_code == 302
        for name in ("302 Location", "progress <result href>", "list <result href>"):
            download = httpx.get(server.url + paths[name])  # no credentials
            assert download.status_code == 200 and download.text == "hello", name


def test_without_public_url_the_urls_are_on_the_request_s_own_address(plain: Server) -> None:
    tid, urls = every_url(plain)
    check_on(plain.url, tid, urls)
    with client(plain, "contributor") as http:  # as given, with nothing taken off
        assert http.get(urls["202 Content-Location"]).status_code == 200
        assert http.get(urls["303 Location"]).status_code == 302
        assert httpx.get(urls["302 Location"]).text == "hello"
    with client(plain, "manager") as http:
        assert http.get(urls["201 Location"]).status_code == 404  # deleted, but its address


def test_a_trusted_proxy_chooses_the_scheme_and_host(plain: Server) -> None:
    tid, urls = every_url(plain, headers=FORWARDED)  # from 127.0.0.1: trusted by default
    follow(plain, check_on(PROXY, tid, urls))


def test_an_untrusted_peer_s_forwarded_headers_are_ignored(plain: Server) -> None:
    tid, urls = every_url(plain, OTHER_PEER, FORWARDED)
    follow(plain, check_on(plain.url, tid, urls))


def test_forwarded_allow_ips_names_the_proxies(proxied: Server) -> None:
    tid, urls = every_url(proxied, OTHER_PEER, FORWARDED)
    follow(proxied, check_on(PROXY, tid, urls))
    tid, urls = every_url(proxied, "127.0.0.1", FORWARDED)  # this machine is not trusted here
    follow(proxied, check_on(proxied.url, tid, urls))


@pytest.mark.parametrize("source", ["127.0.0.1", OTHER_PEER])
def test_public_url_whatever_the_host_and_forwarded_headers(public: Server, source: str) -> None:
    """Not even a trusted proxy's headers, nor a forged Host, steer the links."""
    tid, urls = every_url(public, source, {**FORWARDED, "Host": "evil.example.net"})
    follow(public, check_on(PUBLIC, tid, urls))


def test_the_host_the_nearest_proxy_added_counts(plain: Server) -> None:
    """A client in front of the proxy may send its own X-Forwarded-Host; the proxy adds the
    real one after it."""
    as_lines = [("X-Forwarded-Host", "evil.example"), ("X-Forwarded-Host", "proxy.example")]
    for forwarded in ({"X-Forwarded-Host": "evil.example, proxy.example"}, as_lines):
        with client(plain, "contributor") as http:
            started = http.post(f"{GROUP}/threads", data={"job": "sleep", "seconds": "0"},
                                headers=forwarded)
        assert started.status_code == 202, started.text
        assert started.headers["content-location"].startswith("http://proxy.example/ps/"), (
            started.headers)


# -- hostile hosts ----------------------------------------------------------------------------
BAD_HOSTS = [
    b"evil.example/x", b"user@evil.example", b"evil.example X-Injected: 1", b"evil.example?x",
    b"evil.example#x", b"\xc3\xa9vil.example", b"[::1", b"a:b:c", b"evil.example:123456",
    b"x" * 300, b"", b"evil.example\\x", b"evil.example\x0bX-Injected: 1", b"evil.example\x00",
]


def raw(server: Server, head: bytes, source: str = "127.0.0.1") -> tuple[list[bytes], bytes]:
    """The answer's header lines and body, as the bytes on the wire."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=15,
                                  source_address=(source, 0)) as sock:
        sock.sendall(head)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    lines, _, body = data.partition(b"\r\n\r\n")
    return lines.split(b"\r\n"), body


def post_start(host_lines: bytes, extra: bytes = b"") -> bytes:
    body = b"job=sleep&seconds=0"
    auth = b"Basic Y29udHJpYnV0b3I6Y29udHJpYnV0b3ItcHc="  # contributor
    return (b"POST " + GROUP.encode() + b"/threads HTTP/1.1\r\n" + host_lines + extra
            + b"Authorization: " + auth + b"\r\nConnection: close\r\n"
            + b"Content-Type: application/x-www-form-urlencoded\r\n"
            + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def threads_total(server: Server) -> int:
    with server.client("admin") as http:
        listed = http.get("/ps/service/threads", params={"status": "all"})
    return int(re.findall(r'<threads [^>]*total="([0-9]+)"', listed.text)[0])


def check_refused(lines: list[bytes], body: bytes) -> None:
    """400, the error document, naming the Host when the request reached the application (the
    HTTP parser refuses some first: httptools any control character); no header the client
    wrote."""
    assert lines[0].startswith(b"HTTP/1.1 400 "), lines
    assert not [line for line in lines if line.lower().startswith(b"x-injected")], lines
    for line in lines:
        assert not re.search(rb"[\x00-\x08\x0b-\x1f\x7f-\xff]", line), lines
    assert b"application/xml" in b"\n".join(lines).lower(), lines
    assert b'<error id="0201">' in body, body
    assert b"Host must be a host name" in body or b"a header holds a character" in body, body


@pytest.mark.parametrize("host", BAD_HOSTS, ids=repr)
def test_a_host_that_is_no_host_is_400_and_starts_nothing(plain: Server, host: bytes) -> None:
    before = threads_total(plain)
    check_refused(*raw(plain, post_start(b"Host: " + host + b"\r\n")))
    if host:  # (an empty one is none) from a trusted proxy, it is the Host, so must be one
        forwarded = b"X-Forwarded-Host: " + host + b"\r\n"
        check_refused(*raw(plain, post_start(b"Host: a\r\n", forwarded)))
    assert threads_total(plain) == before


def test_the_error_answers_are_the_error_document(plain: Server) -> None:
    lines, body = raw(plain, post_start(b"Host: evil.example/x\r\n"))
    assert b"content-type: application/xml;charset=utf-8" in [x.lower() for x in lines], lines
    assert b"x-content-type-options: nosniff" in [x.lower() for x in lines], lines
    assert body.startswith((b"<?xml", b"<error")), body
    assert b"<request>/ps/service/groups/dev/threads</request>" in body, body
    two = post_start(b"Host: a.example\r\nHost: b.example\r\n")
    check_refused(*raw(plain, two))
    lines, body = raw(plain, b"GET /health HTTP/1.1\r\nHost: a b\r\nConnection: close\r\n\r\n")
    check_refused(lines, body)


def test_an_untrusted_peer_s_odd_forwarded_host_is_ignored(plain: Server) -> None:
    lines, _ = raw(plain, post_start(b"Host: a.example\r\n", b"X-Forwarded-Host: a b/c\r\n"),
                   OTHER_PEER)
    assert lines[0].startswith(b"HTTP/1.1 202 "), lines
    assert b"content-location: http://a.example/ps/service/groups/dev/threads/" in (
        b"\n".join(lines).lower()), lines


def test_without_a_host_the_listening_address(plain: Server) -> None:
    """HTTP/1.0 needs no Host: the links are on the address the server listens on."""
    lines, _ = raw(plain, post_start(b"").replace(b"HTTP/1.1", b"HTTP/1.0", 1))
    assert lines[0].split(b" ")[1] == b"202", lines
    found = [x for x in lines if x.lower().startswith(b"content-location: ")]
    assert found and found[0].split(b" ", 1)[1].startswith(plain.url.encode() + b"/ps/"), lines


# -- settings ---------------------------------------------------------------------------------
@pytest.mark.parametrize("setting, value, message", [
    ("public-url", "threads.example.org", "public-url"),
    ("public-url", "ftp://threads.example.org", "public-url"),
    ("public-url", "https://user@threads.example.org", "public-url"),
    ("public-url", "https://threads.example.org/?x=1", "public-url"),
    ("public-url", "https://threads example.org", "public-url"),
    ("forwarded-allow-ips", ["proxy.internal"], "'proxy.internal' is not an IP address"),
    ("forwarded-allow-ips", ["10.0.0.1/8"], "'10.0.0.1/8' is not an IP address"),
    ("forwarded-allow-ips", ["*", "10.0.0.1"], "'*' is not an IP address"),
])
def test_serve_refuses_urls_and_proxies_it_cannot_use(
    tmp_path: Path, setting: str, value: object, message: str
) -> None:
    config = tmp_path / "threadsvc.toml"
    quoted = value if isinstance(value, str) else ", ".join(f'"{v}"' for v in value)
    rendered = f'"{quoted}"' if isinstance(value, str) else f"[{quoted}]"
    config.write_text(f'db = "sqlite:///{tmp_path}/t.db"\n{setting} = {rendered}\n')
    result = CliRunner().invoke(main, ["serve", "--config", str(config)])
    assert result.exit_code == 2, result.output
    assert message in result.output, result.output
    assert not (tmp_path / "t.db").exists()


# -- a long-running-operation client that follows the headers unchanged -----------------------
@pytest.mark.slow  # the poller waits the Retry-After second between polls
def test_azure_core_s_location_poller_drives_a_thread_to_its_result(plain: Server) -> None:
    """azure-core's LROBasePolling with LocationPolling, with the redirect policy its clients
    run: POST the start, poll the 202's Location until it is no longer 202 (the result's
    302, followed to the download). It sends each URL as it came: a relative one fails."""
    from azure.core import PipelineClient
    from azure.core.configuration import Configuration
    from azure.core.pipeline.policies import HeadersPolicy, RedirectPolicy
    from azure.core.polling import LROPoller
    from azure.core.polling.base_polling import LocationPolling, LROBasePolling
    from azure.core.rest import HttpRequest

    auth = "Basic " + base64.b64encode(f"contributor:{password('contributor')}".encode()).decode()
    config: Configuration[Any, Any] = Configuration()  # as an SDK's client configures it
    config.headers_policy = HeadersPolicy({"Authorization": auth})
    config.redirect_policy = RedirectPolicy()
    with PipelineClient(plain.url, config=config) as pipeline:
        start = HttpRequest("POST", f"{plain.url}{GROUP}/threads",
                            data={"job": "sleep", "seconds": "1.5", "steps": "3",
                                  "result": "hello"})
        initial = pipeline.send_request(start, _return_pipeline_response=True)
        assert initial.http_response.status_code == 202
        tid = thread_id(httpx.Response(202, content=initial.http_response.read()))
        poller = LROPoller(pipeline, initial, lambda response: response,
                           LROBasePolling(timeout=1, lro_algorithms=[LocationPolling()]))
        assert poller.status() == "InProgress"
        done = poller.result(timeout=60)
    assert poller.status() == "Succeeded"
    polled = f"{plain.url}{GROUP}/threads/{tid}/result"
    assert initial.http_response.headers["location"] == polled
    downloaded = done.http_response
    assert downloaded.request.url.startswith(f"{plain.url}/ps/service/results/")  # via the 302
    assert downloaded.status_code == 200 and downloaded.text() == "hello"


def test_uvicorn_s_variable_is_not_read_and_serve_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before the setting, FORWARDED_ALLOW_IPS (uvicorn's) named the proxies: now the setting
    does, and a node started with the variable says it is not read."""
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", OTHER_PEER)
    for server, _ in running_server(tmp_path):
        with client(server, "contributor", "127.0.0.1", FORWARDED) as http:  # the default
            started = http.post(f"{GROUP}/threads", data={"job": "sleep", "seconds": "0"})
        assert started.headers["content-location"].startswith(PROXY + "/ps/"), started.headers
        with client(server, "contributor", OTHER_PEER, FORWARDED) as http:
            started = http.post(f"{GROUP}/threads", data={"job": "sleep", "seconds": "0"})
        assert started.headers["content-location"].startswith(server.url + "/ps/")
        assert "FORWARDED_ALLOW_IPS is not read" in server.log.read_text()
