"""A pre-signed result link stops working at the very moment shown as `<result expires>`.

The links were itsdangerous tokens stamped in whole seconds, checked as "older than
`result-url-ttl` seconds": a link shown as expiring at 12:00:05.000 worked until 12:00:05.999.
Now each token carries its expiry in milliseconds (signed with it) and is refused from that
millisecond on. Attacked here with links signed at different fractions of a second (from the
thread document, the 302 of /result, a list, and the JSON form), each tried just after its
expiry; and with an expired link's token taken apart and given a later expiry."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from datetime import datetime

import httpx
import pytest

from tests.hostile.payloads import GROUP, check_error, finish
from tests.support import Server, running_server

pytestmark = pytest.mark.slow

TTL = 2


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, str]]]:
    yield from running_server(tmp_path_factory.mktemp("expiry"), **{"result-url-ttl": TTL})


@pytest.fixture(scope="module")
def thread(server: Server) -> str:
    with server.client("contributor") as http:
        started = http.post(f"{GROUP}/threads",
                            data={"job": "sleep", "seconds": "0", "result": "kept"})
        tid = started.text.split('id="', 1)[1][:32]
        assert finish(http, tid).get("status") == "completed"
    return tid


def epoch_ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


def wait_until(moment_ms: int) -> None:
    """Sleep until the clock (shared with the server) has passed `moment_ms`."""
    while (left := moment_ms / 1000 - time.time()) > 0:
        time.sleep(left + 0.005)


def shown_links(http: httpx.Client, tid: str) -> list[tuple[str, int]]:
    """(href, expires) from the progress document, the list and the JSON form."""
    found = []
    xml = http.get(f"{GROUP}/threads/{tid}/progress").text
    href = xml.split('href="', 1)[1].split('"', 1)[0].replace("&amp;", "&")
    found.append((href, epoch_ms(xml.split('expires="', 1)[1].split('"', 1)[0])))
    listed = http.get(f"{GROUP}/threads", params={"status": "all", "pagesize": 1000}).text
    part = listed.split(f'id="{tid}"', 1)[1]
    found.append((part.split('href="', 1)[1].split('"', 1)[0],
                  epoch_ms(part.split('expires="', 1)[1].split('"', 1)[0])))
    result = http.get(f"/ps/api/groups/dev/threads/{tid}/progress.json").json()["thread"]["result"]
    found.append((result["href"], epoch_ms(result["expires"])))
    return found


def test_links_are_refused_from_their_expiry_on(server: Server, thread: str) -> None:
    links: list[tuple[str, int]] = []
    with server.client("contributor") as http:
        for _ in range(4):  # signed at different fractions of a second
            links += shown_links(http, thread)
            time.sleep(0.27)
    assert len({expires % 1000 for _, expires in links}) > 1, links
    assert httpx.get(links[-1][0]).status_code == 200  # a link works before its expiry
    for href, expires in links:
        wait_until(expires)
        check_error(httpx.get(href), 403, "0400", "expired")


def test_the_redirect_link_is_refused_ttl_after_it_was_asked_for(
    server: Server, thread: str
) -> None:
    with server.client("contributor") as http:
        for _ in range(3):
            asked = int(time.time() * 1000)
            redirect = http.get(f"{GROUP}/threads/{thread}/result")
            assert redirect.status_code == 302
            wait_until(asked + TTL * 1000)  # its expiry is at most this
            check_error(httpx.get(redirect.headers["location"]), 403, "0400", "expired")
            time.sleep(0.31)


def test_a_later_expiry_cannot_be_written_into_a_token(server: Server, thread: str) -> None:
    with server.client("contributor") as http:
        href, expires = shown_links(http, thread)[0]
    token = href.rsplit("/", 1)[1]
    payload, stamp, signature = token.split(".")
    claimed = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claimed == [thread, expires]  # the exact expiry, in the token
    for later in (expires + 1, expires + 3_600_000, 2**53):
        forged = base64.urlsafe_b64encode(json.dumps([thread, later]).encode()).decode()
        forged_href = href.replace(token, f"{forged.rstrip('=')}.{stamp}.{signature}")
        check_error(httpx.get(forged_href), 403, "0400", "not valid")
