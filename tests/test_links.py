"""Pre-signed result links: rotation of the secret key, expiry, tampering."""

from __future__ import annotations

import time

import pytest

from tests.support import Clock
from threadsvc.errors import LinkRefused
from threadsvc.results import ResultLinks


def test_a_link_survives_key_rotation() -> None:
    before = ResultLinks(("old-key",), ttl=60)
    link = before.sign("a" * 32)
    after = ResultLinks(("new-key", "old-key"), ttl=60)  # the new key signs, both verify
    assert after.verify(link.token) == "a" * 32
    with pytest.raises(LinkRefused):
        before.verify(after.sign("b" * 32).token)  # a node without the new key refuses it
    dropped = ResultLinks(("new-key",), ttl=60)
    with pytest.raises(LinkRefused):
        dropped.verify(link.token)  # once the old key is gone, its links are too


def test_expired_and_tampered_links_are_refused(clock: Clock) -> None:
    links = ResultLinks(("k",), ttl=1)
    link = links.sign("c" * 32)
    assert link.expires > time.time() * 1000
    with pytest.raises(LinkRefused, match="not valid"):
        middle = len(link.token) - 10  # inside the signature, away from base64 padding bits
        swapped = "A" if link.token[middle] != "A" else "B"
        links.verify(link.token[:middle] + swapped + link.token[middle + 1 :])
    clock.advance(2.1)
    with pytest.raises(LinkRefused, match="expired"):
        links.verify(link.token)


def test_a_link_is_refused_from_the_millisecond_it_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    from threadsvc import results

    links = ResultLinks(("k",), ttl=5)
    clock = [results.now_ms()]
    monkeypatch.setattr(results, "now_ms", lambda: clock[0])
    link = links.sign("d" * 32)
    assert link.expires == clock[0] + 5000  # what `<result expires>` shows
    clock[0] = link.expires - 1
    assert links.verify(link.token) == "d" * 32
    clock[0] = link.expires
    with pytest.raises(LinkRefused, match="expired"):
        links.verify(link.token)


def test_a_link_signed_before_links_carried_their_expiry_still_works() -> None:
    from itsdangerous import URLSafeTimedSerializer

    legacy = URLSafeTimedSerializer("k", salt="result-link").dumps("e" * 32)
    assert ResultLinks(("k",), ttl=60).verify(legacy) == "e" * 32
    for payload in (["e" * 32, True], ["e" * 32, "1"], [1, 2], {"e": 1}, None, ["e" * 32]):
        token = URLSafeTimedSerializer("k", salt="result-link").dumps(payload)
        with pytest.raises(LinkRefused, match="not valid"):
            ResultLinks(("k",), ttl=60).verify(token)
