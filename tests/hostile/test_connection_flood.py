"""One user holding every connection: hundreds of long-polls (`?wait=30`) on one token against
a server whose open-file limit is low (256 here, as systemd's default 1,024 is for a real one).

Before: accept() failed once the descriptors were gone, /health and everyone else went
unanswered, and asyncio logged each failure with its traceback (22 MB in 13 s here, from 400
polls). Now (threadsvc/web/serving.py, threadsvc/logrepeat.py):
- long-polls count against the per-user quota of event streams (`max-streams-per-user`):
  beyond it, 429 `0302`;
- connections are capped below the open-file limit: beyond the cap an idle keep-alive
  connection is closed to make room, else the newcomer is answered 503 `0503` (the error
  document, never uvicorn's plain text), and /health still answers `ok`; far beyond, a
  newcomer is closed unanswered, so that accept() never runs out of descriptors;
- a warning repeated many times a second is written once a second, with a count.
Meanwhile other users are served, and the log stays small (its size is asserted).
"""

from __future__ import annotations

import asyncio
import collections
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.hostile.payloads import GROUP, check_error
from tests.support import Server, running_server

pytestmark = [pytest.mark.slow, pytest.mark.chaos]

FILES = 256  # the server's open-file limit
POLLS = 400  # long-polls sent at once by one user, well beyond FILES
LOG_BOUND = 200_000  # bytes of log a flood may cost at most (it was 22 MB)


class LimitedServer(Server):
    """A server whose process may open FILES files (as `prlimit --nofile` would make it)."""

    def command(self) -> list[str]:
        prlimit = shutil.which("prlimit")  # util-linux; it execs the server (the same pid)
        if prlimit is None:
            pytest.skip("prlimit (util-linux) is not installed")
        return [prlimit, f"--nofile={FILES}", "--", *super().command()]


def limited(directory: Path, **settings: Any) -> Iterator[tuple[Server, dict[str, str]]]:
    yield from running_server(directory, LimitedServer, **{"max-running": 4, **settings})


@pytest.fixture(scope="module")
def quota(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, str]]]:
    yield from limited(tmp_path_factory.mktemp("quota"), **{"max-streams-per-user": 20})


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, str]]]:
    """No useful per-user quota: the connection cap alone stands."""
    yield from limited(tmp_path_factory.mktemp("capped"), **{"max-streams-per-user": 10_000})


def quiet_thread(server: Server) -> str:
    """A thread that does not change for two minutes: every long-poll on it waits in full."""
    with server.client("contributor") as http:
        answer = http.post(f"{GROUP}/threads", data={"job": "sleep", "seconds": "120",
                                                      "steps": "1"})
        assert answer.status_code == 202, answer.text
        return str(answer.headers["content-location"]).rsplit("/threads/", 1)[1].split("/")[0]


async def flood(server: Server, token: str, url: str, count: int,
                during: Any) -> tuple[collections.Counter[str], list[httpx.Response], Any]:
    """`count` long-polls at once, each on its own connection; `during()` runs (in a thread)
    while they are held. Returns what each got, the refusals, and what `during` returned."""
    limits = httpx.Limits(max_connections=count + 10, max_keepalive_connections=count + 10)
    headers = {"Authorization": f"Bearer {token}"}
    refusals: list[httpx.Response] = []
    async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=60) as http:

        async def one() -> str:
            try:
                answer = await http.get(url, params={"wait": "30"}, headers=headers)
            except httpx.TransportError:
                return "closed"  # beyond the ceiling: closed unanswered
            if answer.status_code in (429, 503):
                refusals.append(answer)
            return str(answer.status_code)

        polls = [asyncio.create_task(one()) for _ in range(count)]
        await asyncio.sleep(3)  # every poll has been answered or is waiting
        seen = await asyncio.to_thread(during)
        got = collections.Counter(await asyncio.gather(*polls))
    return got, refusals, seen


def others_are_served(server: Server) -> dict[str, int]:
    """/health, and another user's list, while the flood holds its connections."""
    with httpx.Client(base_url=server.url, timeout=10) as http:
        health = http.get("/health")
        assert health.status_code == 200 and health.text == "ok\n", health.text
    with server.client("manager", timeout=10) as http:
        listed = http.get(f"{GROUP}/threads")
        assert listed.status_code == 200, listed.text
    return {"health": health.status_code, "other user": listed.status_code}


def test_one_user_cannot_hold_every_connection(quota: tuple[LimitedServer, dict[str, str]]) -> None:
    server, tokens = quota
    thread_id = quiet_thread(server)
    url = f"{GROUP}/threads/{thread_id}/progress"
    before = server.log.stat().st_size
    got, refusals, _ = asyncio.run(flood(server, tokens["contributor"], url, POLLS,
                                         lambda: others_are_served(server)))
    assert got["304"] == 20, got  # the quota held, in full, and no more
    assert set(got) <= {"304", "429", "503", "closed"}, got
    for refused in refusals:
        if refused.status_code == 429:
            check_error(refused, 429, "0302")
            assert refused.headers["retry-after"]
        else:
            check_error(refused, 503, "0503")
    grown = server.log.stat().st_size - before
    assert grown < LOG_BOUND, grown
    print(f"\nconnection flood, quota 20: {POLLS} polls -> {dict(got)}; log +{grown:,} bytes")


def test_the_connection_cap_answers_503_and_health_still_answers(
    capped: tuple[LimitedServer, dict[str, str]],
) -> None:
    server, tokens = capped
    thread_id = quiet_thread(server)
    url = f"{GROUP}/threads/{thread_id}/progress"
    before = server.log.stat().st_size

    def during() -> int:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            health = http.get("/health")  # beyond the cap, liveness is still `ok`
            assert health.status_code == 200 and health.text == "ok\n", health.text
        with server.client("manager", timeout=10) as http:  # others: the error document
            listed = http.get(f"{GROUP}/threads", headers={"Accept": "application/json"})
            assert listed.status_code == 503, listed.text
            assert listed.json()["error"]["id"] == "0503"
            return listed.status_code

    got, refusals, _ = asyncio.run(flood(server, tokens["contributor"], url, POLLS, during))
    held = got["304"]
    assert 0 < held < FILES and got["503"] > 0, got
    assert set(got) <= {"304", "503", "closed"}, got
    for refused in refusals:
        check_error(refused, 503, "0503")
        assert refused.headers["connection"] == "close" and refused.headers["retry-after"]
    others_are_served(server)  # the flood is over: everyone is served again
    grown = server.log.stat().st_size - before
    assert grown < LOG_BOUND, grown
    log = server.log.read_text()
    assert "serving at most" in log and f"open-file limit {FILES}" in log
    assert "more like this" in log  # the repeated warning was counted, not repeated
    print(f"\nconnection flood, cap only: {POLLS} polls -> {dict(got)}; log +{grown:,} bytes")


def test_idle_connections_make_room(capped: tuple[LimitedServer, dict[str, str]]) -> None:
    """Keep-alive connections left idle by one client are closed for a newcomer at the cap,
    rather than the newcomer being refused."""
    server, _ = capped
    cap = int(server.log.read_text().split("serving at most ")[1].split()[0])

    async def main() -> int:
        limits = httpx.Limits(max_connections=cap + 20, max_keepalive_connections=cap + 20)
        async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=30) as http:
            gate = asyncio.Event()

            async def one() -> int:
                async with http.stream("GET", "/health") as answer:
                    await gate.wait()  # hold the connection until all are open
                    return answer.status_code

            tasks = [asyncio.create_task(one()) for _ in range(cap)]
            await asyncio.sleep(1)
            gate.set()
            codes = await asyncio.gather(*tasks)
            assert codes.count(200) == cap, collections.Counter(codes)
            # the cap's worth of idle keep-alive connections now sits in the pool
            with server.client("manager", timeout=10) as other:
                return other.get(f"{GROUP}/threads").status_code

    assert asyncio.run(main()) == 200
