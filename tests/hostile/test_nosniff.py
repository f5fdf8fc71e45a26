"""Every answer carries `X-Content-Type-Options: nosniff`, so that no browser guesses that a
result, a log or an error message echoing a client's text is HTML or script: XML and JSON
documents, errors of every kind (401, 403, 404, 405, 400, 413, 500), 304s, 302 and 303
redirects, downloads (whole and ranges), event streams, text logs, console pages and their
redirects, static files, /health, /metrics and openapi.json.

The 500 comes from a handler made to raise by a `sitecustomize` module on the server's
PYTHONPATH (Starlette sends that answer outside every middleware)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.hostile.payloads import GROUP, finish
from tests.support import Server, running_server, sitecustomize

BOOT = '''from threadsvc.web import api

async def broken(request):
    raise RuntimeError("made to fail by the test")

api.openapi = broken
'''


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, str]]]:
    with sitecustomize(tmp_path_factory.mktemp("boot"), BOOT):
        yield from running_server(tmp_path_factory.mktemp("nosniff"), **{"max-upload": 1000})


def sniffless(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, (response.status_code, response.text[:300])
    assert response.headers.get_list("x-content-type-options") == ["nosniff"], (
        response.request.method, response.url, response.headers)


def test_every_kind_of_answer(server: Server) -> None:
    with server.client("contributor") as http, server.client("admin") as admin:
        started = http.post(f"{GROUP}/threads", data={"job": "sleep", "seconds": "0",
                                                      "result": "<script>alert(1)</script>"})
        sniffless(started, 202)
        tid = started.text.split('id="', 1)[1][:32]
        finish(http, tid)
        progress = http.get(f"{GROUP}/threads/{tid}/progress")
        sniffless(progress, 200)
        sniffless(http.get(f"{GROUP}/threads/{tid}/progress",
                           headers={"If-None-Match": progress.headers["etag"]}), 304)
        sniffless(http.get(f"{GROUP}/threads/{tid}/progress?wait=1",
                           headers={"If-None-Match": progress.headers["etag"]}), 304)
        sniffless(http.get(f"/ps/api/groups/dev/threads/{tid}.json"), 303)
        sniffless(http.get(f"{GROUP}/threads/{tid}"), 303)
        redirect = http.get(f"{GROUP}/threads/{tid}/result")
        sniffless(redirect, 302)
        link = redirect.headers["location"]
        sniffless(httpx.get(link), 200)
        sniffless(httpx.get(link, headers={"Range": "bytes=0-3"}), 206)
        sniffless(httpx.get(link, headers={"Range": "bytes=900-"}), 416)
        sniffless(httpx.get(link + "x"), 403)
        sniffless(http.get(f"{GROUP}/threads/{tid}/logs", headers={"Accept": "text/plain"}), 200)
        sniffless(http.get(f"{GROUP}/threads/{tid}/logs"), 200)
        with http.stream("GET", f"{GROUP}/threads/{tid}/events") as stream:
            sniffless(stream, 200)
            assert stream.headers["content-type"].startswith("text/event-stream")
        sniffless(http.get(f"{GROUP}/threads", headers={"Accept": "application/json"}), 200)
        sniffless(http.get(f"{GROUP}/threads/{'0' * 32}"), 404)
        sniffless(http.get(f"{GROUP}/threads?pagesize=5000"), 400)
        sniffless(http.put(f"{GROUP}/threads"), 405)
        sniffless(http.get("/ps/service/no-such-service"), 404)
        sniffless(http.get("/ps/service/threads"), 403)
        sniffless(http.post(f"{GROUP}/threads", content=b"x" * 5000,
                            headers={"Content-Type": "application/xml"}), 413)
        sniffless(http.delete(f"{GROUP}/threads/{tid}"), 403)
        sniffless(admin.get("/metrics"), 200)
        sniffless(admin.delete(f"/ps/service/threads/{tid}"), 204)
    sniffless(httpx.get(f"{server.url}{GROUP}/threads"), 401)
    sniffless(httpx.get(f"{server.url}/health"), 200)
    sniffless(httpx.post(f"{server.url}/ps/oauth/token", data={"grant_type": "x"}), 400)
    sniffless(httpx.get(f"{server.url}/ps/service/openapi.json"), 500)  # made to fail


def test_console_answers(server: Server) -> None:
    with httpx.Client(base_url=server.url) as browser:
        sniffless(browser.get("/ps/ui"), 303)
        sniffless(browser.get("/ps/ui/groups"), 303)  # to the sign-in page
        form = browser.get("/ps/ui/sign-in")
        sniffless(form, 200)
        csrf = form.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        signed = browser.post("/ps/ui/sign-in", data={
            "csrf": csrf, "username": "contributor", "password": "contributor-pw"})
        sniffless(signed, 303)
        sniffless(browser.get("/ps/ui/groups"), 200)
        sniffless(browser.get("/ps/ui/groups/dev/threads?user=%00"), 400)
        sniffless(browser.get("/ps/ui/no-such-page"), 404)
        sniffless(browser.get("/ps/ui/static/no-such-file.css"), 404)
