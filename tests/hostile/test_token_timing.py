"""Timing attacks on secrets: is an OAuth client secret or an API token compared in constant
time? Timing over a network cannot be asserted without flaking, so this module asserts the
code path, in this process against the test server's own store, and only measures the timing
over real HTTP and reports it:

- an OAuth client secret is hashed (SHA-256) and the hashes are compared with
  `hmac.compare_digest`, for unknown clients too (against a random hash);
- an API token is never compared at all: it is hashed, and the store is asked for the user of
  that hash (a lookup by a value the caller cannot choose byte by byte);
- the secrets that sign (links, access tokens, CSRF tokens) are checked by itsdangerous, whose
  signatures are compared with `hmac.compare_digest`.

`test_timing_is_reported` sends, interleaved, secrets wrong in their first byte and wrong in
their last byte and prints the medians (`pytest -s` shows them). THREADSVC_TIMING_TRIALS sets
the number of trials per kind (default 200; e.g. 5000 for a long look).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest

from tests.hostile.payloads import GROUP
from tests.support import Server, running_server
from threadsvc import admin
from threadsvc.errors import AuthenticationFailed
from threadsvc.settings import load_settings

pytestmark = pytest.mark.slow

TRIALS = int(os.environ.get("THREADSVC_TIMING_TRIALS", "200"))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, str]]]:
    """Wrong client secrets count against the client id (test_oauth_limits.py): here they are
    measured, so the limit is set out of reach."""
    yield from running_server(tmp_path_factory.mktemp("timing"), **{
        "lockout-attempts": 1_000_000})


@pytest.fixture(scope="module")
def client(server: Server) -> tuple[str, str]:
    out = subprocess.run(
        [sys.executable, "-m", "threadsvc", "client", "add", "--config", str(server.config),
         "contributor"], check=True, capture_output=True, text=True).stdout
    values = dict(line.split(": ", 1) for line in out.strip().splitlines())
    return values["client_id"], values["client_secret"]


class Spy:
    """Records the calls of a function while passing them on."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn
        self.calls: list[tuple[Any, ...]] = []

    def __call__(self, *args: Any) -> Any:
        self.calls.append(args)
        return self.fn(*args)


@pytest.fixture
def compare(monkeypatch: pytest.MonkeyPatch) -> Iterator[Spy]:
    spy = Spy(hmac.compare_digest)
    monkeypatch.setattr(hmac, "compare_digest", spy)  # identity calls hmac.compare_digest
    yield spy


def with_identity(server: Server, action: Any) -> Any:
    async def main() -> Any:
        async with admin.opened(load_settings(server.config, environ={})) as opened:
            return await action(opened)

    return anyio.run(main)


def flip(secret: str, at: int) -> str:
    """`secret` with the character at `at` changed (to another of the same alphabet)."""
    replaced = "A" if secret[at] != "A" else "B"
    return secret[:at] + replaced + secret[at + 1:]


# -- the code paths -----------------------------------------------------------------------------
def test_client_secrets_are_compared_as_hashes_in_constant_time(
    server: Server, client: tuple[str, str], compare: Spy
) -> None:
    client_id, secret = client

    async def attempts(opened: admin.Admin) -> list[bool]:
        results = []
        for cid, guess in ((client_id, flip(secret, 0)), (client_id, flip(secret, -1)),
                           ("no-such-client", secret), (client_id, secret)):
            try:
                await opened.identity.issue_access_token(cid, guess)
                results.append(True)
            except AuthenticationFailed:
                results.append(False)
        return results

    assert with_identity(server, attempts) == [False, False, False, True]
    assert len(compare.calls) == 4  # every attempt, an unknown client's too
    for (given, expected), guess in zip(compare.calls, [flip(secret, 0), flip(secret, -1),
                                                        secret, secret], strict=True):
        assert given == hashlib.sha256(guess.encode()).hexdigest()  # the hash, not the secret
        assert len(expected) == 64 and secret not in (given, expected)


def test_api_tokens_are_looked_up_by_their_hash(
    server: Server, tokens: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[str] = []
    token = tokens["contributor"]

    async def attempts(opened: admin.Admin) -> list[str]:
        original = opened.store.user_for_token

        async def recording(token_hash: str) -> Any:
            asked.append(token_hash)
            return await original(token_hash)

        monkeypatch.setattr(opened.store, "user_for_token", recording)
        names = []
        for guess in (token, flip(token, 4), flip(token, -1)):
            try:
                names.append((await opened.identity.check_bearer(guess)).username)
            except AuthenticationFailed:
                names.append("-")
        return names

    assert with_identity(server, attempts) == ["contributor", "-", "-"]
    assert asked == [hashlib.sha256(t.encode()).hexdigest()
                     for t in (token, flip(token, 4), flip(token, -1))]


def test_signatures_are_checked_by_itsdangerous_in_constant_time(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """Links, access tokens and CSRF tokens are itsdangerous tokens: its verification ends
    in hmac.compare_digest (checked here on a link of threadsvc.results)."""
    from threadsvc.results import ResultLinks

    spy = Spy(hmac.compare_digest)
    monkeypatch.setattr(hmac, "compare_digest", spy)  # as itsdangerous.signer calls it
    links = ResultLinks(("k",), ttl=60)
    token = links.sign("a" * 32).token
    assert links.verify(token) == "a" * 32
    with pytest.raises(Exception, match="not valid"):
        links.verify(flip(token, -1))
    assert len(spy.calls) >= 2


# -- the timing, measured and reported ---------------------------------------------------------
def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def measure(send: Any, guesses: dict[str, str]) -> dict[str, list[float]]:
    timings: dict[str, list[float]] = {kind: [] for kind in guesses}
    for _ in range(TRIALS):
        for kind, guess in guesses.items():  # interleaved: drift hits both kinds alike
            began = time.perf_counter()
            response = send(guess)
            timings[kind].append(time.perf_counter() - began)
            assert response.status_code == 401, response.text
    return timings


def test_timing_is_reported(server: Server, client: tuple[str, str],
                            tokens: dict[str, str], record_property: Any) -> None:
    client_id, secret = client
    token = tokens["contributor"]
    with httpx.Client(base_url=server.url) as http:
        secret_times = measure(
            lambda guess: http.post("/ps/oauth/token", data={
                "grant_type": "client_credentials", "client_id": client_id,
                "client_secret": guess}),
            {"first": flip(secret, 0), "last": flip(secret, -1)})
        token_times = measure(
            lambda guess: http.get(f"{GROUP}/threads",
                                   headers={"Authorization": f"Bearer {guess}"}),
            {"first": flip(token, 4), "last": flip(token, -1)})
    lines = []
    for what, timings in (("client secret", secret_times), ("API token", token_times)):
        first, last = median_ms(timings["first"]), median_ms(timings["last"])
        lines.append(f"{what}: median {first:.3f} ms wrong first byte, {last:.3f} ms wrong "
                     f"last byte, difference {last - first:+.3f} ms over {TRIALS} trials each")
        record_property(what, lines[-1])
    print("\ntiming: " + "\ntiming: ".join(lines))
