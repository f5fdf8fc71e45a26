"""Secrets never reach a log: a server run with `log-level = "debug"` (threadsvc, uvicorn,
httpx, httpcore, the store drivers), its standard output and error captured, is put through sign-ins with passwords (Basic and the
console), wrong passwords and a lockout, API tokens, OAuth client secrets and access tokens,
pre-signed result links, webhook secrets (with deliveries signed by them), session cookies
and CSRF tokens. None of those strings may appear in the server's log, nor in any thread's log.
"""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.hostile.payloads import GROUP, finish, thread_logs
from tests.support import USERS, Receiver, Server, password, running_server, wait_for


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, str]]]:
    yield from running_server(tmp_path_factory.mktemp("secrets"), **{
        "webhook-allow-private": True, "lockout-attempts": 2, "lockout-seconds": 60,
        "result-url-ttl": 60, "log-level": "debug"})


def csrf_of(response: httpx.Response) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', response.text)
    assert found, response.text[:2000]
    return found.group(1)


@pytest.fixture(scope="module")
def used_secrets(server: Server, tokens: dict[str, str]) -> tuple[list[str], list[str]]:
    """Use every kind of secret against the server; the secrets, and the threads started."""
    found: list[str] = [password(user) for user in USERS] + list(tokens.values())
    threads: list[str] = []
    wrong = [f"wrong-{secrets.token_hex(8)}" for _ in range(3)]
    found += wrong
    webhook_secret = f"hook-{secrets.token_hex(12)}"
    found.append(webhook_secret)
    receiver = Receiver()
    try:
        out = subprocess.run(
            [sys.executable, "-m", "threadsvc", "client", "add", "--config", str(server.config),
             "contributor"], check=True, capture_output=True, text=True).stdout
        client = dict(line.split(": ", 1) for line in out.strip().splitlines())
        found.append(client["client_secret"])
        issued = httpx.post(f"{server.url}/ps/oauth/token", data={
            "grant_type": "client_credentials", **client})
        access = issued.json()["access_token"]
        found.append(access)
        # a wrong client secret too
        httpx.post(f"{server.url}/ps/oauth/token", data={
            "grant_type": "client_credentials", "client_id": client["client_id"],
            "client_secret": wrong[0]})
        with server.client("manager") as http:
            created = http.post(f"{GROUP}/webhooks", data={
                "url": receiver.url(), "secret": webhook_secret, "events": "all"})
            assert created.status_code == 201, created.text
        for auth in ({"Authorization": f"Bearer {access}"},
                     {"Authorization": f"Bearer {tokens['contributor']}"}):
            with httpx.Client(base_url=server.url, headers=auth) as http:
                started = http.post(f"{GROUP}/threads", data={
                    "job": "sleep", "seconds": "0.2", "steps": "2", "result": "done"})
                assert started.status_code == 202, started.text
                tid = started.text.split('id="', 1)[1][:32]
                threads.append(tid)
                finish(http, tid)
                link = http.get(f"{GROUP}/threads/{tid}/result").headers["location"]
                found.append(link.rsplit("/", 1)[1])
                assert httpx.get(link).status_code == 200
                httpx.get(link + "x")  # a tampered one, refused (and logged as refused?)
        with server.client("contributor") as http:  # Basic, then the cached password
            for _ in range(3):
                assert http.get(f"{GROUP}/threads").status_code == 200
        # failed passwords, then the lock
        for secret in wrong:
            httpx.get(f"{server.url}{GROUP}/threads", auth=("reviewer", secret))
        # the console: sign in, a CSRF token, the cookie
        with httpx.Client(base_url=server.url, follow_redirects=False) as browser:
            form = browser.get("/ps/ui/sign-in")
            browser.post("/ps/ui/sign-in", data={"csrf": csrf_of(form), "username": "approver",
                                                 "password": wrong[1]})
            form = browser.get("/ps/ui/sign-in")
            signed = browser.post("/ps/ui/sign-in", data={
                "csrf": csrf_of(form), "username": "approver", "password": password("approver")})
            assert signed.status_code == 303
            found.append(browser.cookies["threadsvc-session"])
            found.append(csrf_of(browser.get("/ps/ui/groups")))
        with server.client("manager") as http:  # the deliveries came
            wait_for(http, created.headers["location"],
                     lambda r: r.text.count('status="delivered"') >= 2, timeout=20)
    finally:
        receiver.close()
    return found, threads


def test_no_secret_in_the_server_log(server: Server,
                                     used_secrets: tuple[list[str], list[str]]) -> None:
    found, _ = used_secrets
    log = server.log.read_text()
    assert " DEBUG " in log  # the log really is at DEBUG
    assert "HTTP Request: POST http://127.0.0.1" in log  # and shows the webhook deliveries
    # regression: uvicorn's access log kept every pre-signed link (a credential until it
    # expires); threadsvc/logredact.py now logs the path without the token
    assert '"GET /ps/service/results/[redacted]" 200' in log
    leaked = sorted({s for s in found if s in log}, key=found.index)
    assert leaked == [], "\n".join(line for line in log.splitlines()
                                   if any(s in line for s in leaked))[:3000]


def test_no_secret_in_any_thread_log(server: Server,
                                     used_secrets: tuple[list[str], list[str]]) -> None:
    found, threads = used_secrets
    with server.client("admin") as http:
        texts = [text for tid in threads for _, text in thread_logs(http, tid)]
        listed = http.get(f"{GROUP}/threads", params={"status": "all"}).text
    # the list carries each result's pre-signed link, by design; links are signed to the second,
    # so one made in the same second as the link used above is that same string
    texts.append(re.sub(r'<result href="[^"]*"', "<result", listed))
    assert texts
    for text in texts:
        assert not [s for s in found if s in text], text


def test_the_log_files_on_disk_hold_none_either(server: Server,
                                               used_secrets: tuple[list[str], list[str]]) -> None:
    """Whatever the server wrote under its data directory (uploads, results: no logs)."""
    found, _ = used_secrets
    data = Path(server.directory / "data")
    for path in data.rglob("*"):
        if path.is_file() and path.stat().st_size < 10_000_000:
            content = path.read_bytes().decode("utf-8", "replace")
            assert not [s for s in found if s in content], path
