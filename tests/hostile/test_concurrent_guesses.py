"""Guessing a password with many requests at once (docs/api.md#lockout, failed passwords).

The attack: 200 simultaneous Basic requests with wrong passwords for one user. Before, every
one was checked (401), none locked, and the right password among them was accepted. Each
attempt is now reserved in the store before its password is checked, so that however many
arrive together, and on however many nodes, at most `lockout-attempts` passwords are checked
in a window; the others are 429 `0301` without being checked. Variants: an unknown name, the
console's sign-in and Basic together, and two nodes on one PostgreSQL database sharing the
guesses. The server's log counts the checks (one "failed sign-in" line for each).
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import NewStore
from tests.hostile.payloads import GROUP, check_error, checked_at_most
from tests.pg import PostgresCluster
from tests.support import Server, password, running_server, seed

pytestmark = pytest.mark.slow

ATTEMPTS = 5
GUESSES = 200
RIGHT_AT = 197


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, new_store: NewStore
) -> Iterator[tuple[Server, dict[str, str]]]:
    directory = tmp_path_factory.mktemp("guesses")
    yield from running_server(directory, **{
        "db": new_store(directory), "lockout-attempts": ATTEMPTS, "lockout-seconds": 600})


def checked(server: Server, name: str) -> int:
    """How many passwords the server checked and found wrong for `name`, from its log."""
    return len(re.findall(rf"failed sign-in for '{re.escape(name)}' from ", server.log.read_text()))


async def guess_all(urls: list[str], name: str, secrets: list[str]) -> list[httpx.Response]:
    """Every guess at once, spread over `urls` (one per node)."""
    limits = httpx.Limits(max_connections=len(secrets))
    async with httpx.AsyncClient(limits=limits, timeout=120) as http:
        return await asyncio.gather(*(
            http.get(f"{urls[n % len(urls)]}{GROUP}/threads", auth=(name, secret))
            for n, secret in enumerate(secrets)))


def guesses(name: str) -> list[str]:
    return [password(name) if n == RIGHT_AT else f"guess-{n}" for n in range(GUESSES)]


def check_outcome(answers: list[httpx.Response]) -> int:
    """The answers hold at most ATTEMPTS checked passwords a window; every other one is a 429
    0301 (see checked_at_most)."""
    codes = [a.status_code for a in answers]
    made = checked_at_most(codes, ATTEMPTS)
    for answer in answers:
        if answer.status_code == 429:
            check_error(answer, 429, "0301")
            assert int(answer.headers["retry-after"]) >= 1
    return made


def unlock(server: Server, name: str) -> None:
    subprocess.run([sys.executable, "-m", "threadsvc", "user", "unlock", "--config",
                    str(server.config), name], check=True, capture_output=True)


def test_200_guesses_at_once_check_at_most_the_limit(server: Server) -> None:
    answers = asyncio.run(guess_all([server.url], "manager", guesses("manager")))
    made = check_outcome(answers)
    wrong = checked(server, "manager")
    print(f"\n{GUESSES} concurrent guesses: {made} checked ({wrong} logged as failed)")
    assert wrong <= ATTEMPTS
    if answers[RIGHT_AT].status_code != 200:  # the right one came too late to be checked
        check_error(httpx.get(f"{server.url}{GROUP}/threads",
                              auth=("manager", password("manager"))), 429, "0301")
    unlock(server, "manager")
    assert httpx.get(f"{server.url}{GROUP}/threads",
                     auth=("manager", password("manager"))).status_code == 200


def test_many_connections_with_the_right_password_are_all_let_in(server: Server) -> None:
    """The other side of the bound: a client that opens many connections at once with the
    right password (none of them remembered yet) is not locked out by its own requests. One
    check runs at a time per name on a node; the first success is remembered and the rest
    find it, so no right password is refused and only one is checked."""
    name = "approver"
    unlock(server, name)
    answers = asyncio.run(guess_all([server.url], name, [password(name)] * 60))
    assert [a.status_code for a in answers] == [200] * 60
    assert checked(server, name) == 0


def test_an_unknown_name_is_limited_the_same_way(server: Server) -> None:
    answers = asyncio.run(guess_all([server.url], "nobody-here", guesses("nobody-here")))
    assert check_outcome(answers) == ATTEMPTS  # the ones checked all failed: no such user
    assert all(a.status_code != 200 for a in answers)
    assert checked(server, "nobody-here") == ATTEMPTS


def test_the_console_and_basic_share_one_reservation(server: Server) -> None:
    async def console(http: httpx.AsyncClient, secret: str) -> int:
        form = await http.get("/ps/ui/sign-in")
        token = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert token
        answer = await http.post("/ps/ui/sign-in", data={
            "csrf": token.group(1), "username": "approver", "password": secret})
        return answer.status_code

    async def both() -> tuple[list[int], list[httpx.Response]]:
        clients = [httpx.AsyncClient(base_url=server.url, timeout=120) for _ in range(30)]
        try:
            return await asyncio.gather(
                asyncio.gather(*(console(c, f"ui-{n}") for n, c in enumerate(clients))),
                guess_all([server.url], "approver", [f"api-{n}" for n in range(100)]))
        finally:
            for c in clients:
                await c.aclose()

    pages, answers = asyncio.run(both())
    codes = pages + [a.status_code for a in answers]
    assert set(codes) <= {401, 429}, codes
    assert codes.count(401) <= ATTEMPTS and checked(server, "approver") <= ATTEMPTS
    unlock(server, "approver")


def test_two_nodes_share_the_count(postgres: PostgresCluster, tmp_path: Path) -> None:
    """Two nodes on one PostgreSQL database: the guesses, split between them, are reserved in
    the database, so both together check at most ATTEMPTS."""
    url = postgres.new_database_url()
    first = Server(tmp_path / "a", db=url, **{"lockout-attempts": ATTEMPTS})
    second = Server(tmp_path / "b", db=url, **{"lockout-attempts": ATTEMPTS})
    seed(first.config)
    first.start()
    try:
        second.start()
        try:
            answers = asyncio.run(guess_all([first.url, second.url], "reviewer",
                                            guesses("reviewer")))
            made = check_outcome(answers)
            wrong = checked(first, "reviewer") + checked(second, "reviewer")
            print(f"\n{GUESSES} concurrent guesses on two nodes: {made} checked")
            assert wrong <= ATTEMPTS
        finally:
            second.stop()
    finally:
        first.stop()
