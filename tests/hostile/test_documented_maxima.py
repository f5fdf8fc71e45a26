"""Every number a service takes is accepted up to the maximum openapi.json documents for it,
and refused (400 naming it) one above: `…/logs?since=` refused its own documented maximum
(10^15, sixteen digits, when the parser took fifteen). And a log's `next` is always taken
back as `since`, on every page, at the end of the log, and past it."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import httpx
from lxml import etree

from tests.hostile.payloads import GROUP, check_error, finish
from tests.support import Server

PATHS = {  # a route using each integer parameter of the description, by its parameter key
    "page": "{group}/threads",
    "pagesize": "{group}/threads",
    "logSince": "{group}/threads/{tid}/logs",
    "limit": "{group}/threads/{tid}/logs",
    "wait": "{group}/threads/{tid}/progress",
}


def documented() -> dict[str, Any]:
    text = (resources.files("threadsvc") / "schemas" / "openapi.json").read_text()
    parameters: dict[str, Any] = json.loads(text)["components"]["parameters"]
    return parameters


def finished_thread(http: httpx.Client, steps: int = 40) -> str:
    started = http.post(f"{GROUP}/threads", data={"job": "sleep", "seconds": "0",
                                                  "steps": str(steps)})
    tid = started.text.split('id="', 1)[1][:32]
    finish(http, tid)
    return tid


def test_each_documented_maximum_is_accepted_and_no_more(server: Server) -> None:
    integers = {key: p for key, p in documented().items()
                if p["in"] == "query" and p["schema"].get("type") == "integer"}
    assert set(integers) == set(PATHS), "a new integer parameter: add a route for it here"
    with server.client("admin") as http:
        tid = finished_thread(http)
        for key, parameter in integers.items():
            name, schema = parameter["name"], parameter["schema"]
            path = PATHS[key].format(group=GROUP, tid=tid)
            high, low = schema["maximum"], schema["minimum"]
            for value in (str(high), str(low)):
                answer = http.get(path, params={name: value})
                assert answer.status_code in (200, 304), (name, value, answer.text[:300])
            for value in (str(high + 1), str(high * 10), str(low - 1), "1e3", "+1", "٣", "1.0"):
                check_error(http.get(path, params={name: value}), 400, "0201", name)


def test_next_is_always_taken_back_as_since(server: Server) -> None:
    with server.client("admin") as http:
        tid = finished_thread(http)
        since, seen, pages = "0", [], 0
        while True:
            answer = http.get(f"{GROUP}/threads/{tid}/logs", params={"since": since,
                                                                     "limit": 7})
            assert answer.status_code == 200, (since, answer.text[:300])
            logs = etree.fromstring(answer.content)
            seen += [int(e.get("seq") or 0) for e in logs]
            pages += 1
            since = logs.get("next") or ""
            if logs.get("more") == "false":
                break
        total = int(logs.get("total") or 0)
        assert seen == list(range(1, total + 1)) and pages == -(-total // 7)
        for start in (since, str(total), str(total + 5), str(10**15)):
            for _ in range(2):  # the end of the log, and past it: `next` comes back
                answer = http.get(f"{GROUP}/threads/{tid}/logs", params={"since": start})
                assert answer.status_code == 200, (start, answer.text[:300])
                logs = etree.fromstring(answer.content)
                assert len(logs) == 0 and logs.get("more") == "false"
                start = logs.get("next") or ""
