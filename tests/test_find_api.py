"""The list service finds and orders threads as the console does (one Service method): by id
prefix, name and message, end window, and sort; bad values are 400 naming the parameter; a
parameter it does not know changes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from lxml import etree

from tests.support import Server, wait_for

GROUP = "/ps/service/groups/dev"


@pytest.fixture(scope="module")
def world(in_process_world: tuple[Server, dict[str, str]]) -> tuple[Server, dict[str, str]]:
    return in_process_world


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[httpx.Client]:
    with server.client("contributor") as client:
        yield client


@pytest.fixture(scope="module")
def finished(http: httpx.Client) -> list[str]:
    """Two sleep threads, the second started after the first, both completed."""
    ids = []
    for seconds in ("0.3", "0.05"):
        response = http.post(f"{GROUP}/threads", data={"job": "sleep", "seconds": seconds,
                                                       "steps": "1"})
        assert response.status_code == 202
        tid = str(etree.fromstring(response.content).get("id"))
        wait_for(http, f"{GROUP}/threads/{tid}/progress", lambda r: 'status="completed"' in r.text)
        ids.append(tid)
    return ids


def listed(http: httpx.Client, **query: Any) -> list[str]:
    response = http.get(f"{GROUP}/threads", params={"status": "all", **query})
    assert response.status_code == 200, response.text
    return [str(t.get("id")) for t in etree.fromstring(response.content)]


def test_by_id_prefix_name_and_order(http: httpx.Client, finished: list[str]) -> None:
    first, second = finished
    assert listed(http, id=first[:8].upper()) == [first]
    assert listed(http, id=second) == [second]
    assert set(finished) <= set(listed(http, name="SLEEP"))
    assert listed(http, name="no thread is named so") == []
    by_duration = [t for t in listed(http, sort="duration") if t in finished]
    assert by_duration == [first, second]  # 0.3 s before 0.05 s
    oldest = [t for t in listed(http, sort="created", order="asc") if t in finished]
    assert oldest == [first, second]


def test_bad_values_are_400_naming_the_parameter(http: httpx.Client) -> None:
    for query, name in [({"id": "xyz"}, "id"), ({"sort": "size"}, "sort"),
                        ({"order": "up"}, "order"), ({"ended-since": "yesterday"}, "ended-since"),
                        ({"name": "n" * 201}, "name")]:
        response = http.get(f"{GROUP}/threads", params=query)
        assert response.status_code == 400, query
        assert name in etree.fromstring(response.content).findtext("message"), query


def test_an_unknown_parameter_changes_nothing(http: httpx.Client, finished: list[str]) -> None:
    assert listed(http, colour="red") == listed(http)


def test_a_reviewer_may_still_not_list(server: Server, finished: list[str]) -> None:
    with server.client("reviewer") as client:
        assert client.get(f"{GROUP}/threads", params={"name": "sleep"}).status_code == 403
