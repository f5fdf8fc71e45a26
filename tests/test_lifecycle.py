"""The life of a thread, driven with the `sleep` job against a real server (docs/api.md#the-thread-document, #statuses, #lists, #starting-a-thread).

Every status `sleep` can reach, the rules every `<thread>` keeps, the log of each change, log
paging, the thread lists with their filters, the JSON mirror and the answer to a start.
"""

from __future__ import annotations

import itertools
import math
import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from lxml import etree

from tests import support
from tests.support import Server, running_server, wait_for
from threadsvc.xml.schemas import validate

XML_TYPE = "application/xml;charset=utf-8"
GROUP = "/ps/service/groups/dev"
TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")
THREAD_ID = re.compile(r"[0-9a-f]{32}")
STATUSES = {"initialised", "inprogress", "error", "warning", "completed", "failed", "cancelled"}
FINAL = {"completed", "failed", "cancelled"}
RUNNING = {"inprogress", "warning", "error"}
FINAL_TEXT = re.compile(r'<thread [^>]*status="(completed|failed|cancelled)"')

_SCHEMA_LOCK = threading.Lock()  # validate() is for one OS thread at a time per schema


# -- helpers ----------------------------------------------------------------------------------
def parse_xml(response: httpx.Response) -> Any:
    """The root element of an XML answer, after checking its exact Content-Type and schema."""
    assert response.headers.get("content-type") == XML_TYPE, response.headers
    body = response.content
    root = etree.fromstring(body)
    with _SCHEMA_LOCK:
        validate(body)  # the published XSD of its root; raises ValueError with the findings
    return root


def check_thread(el: Any) -> dict[str, str]:
    """The rules of docs/api.md#the-thread-document that hold for any `<thread>` at any moment; returns its attributes."""
    assert el.tag == "thread"
    a = dict(el.attrib)
    for name in ("id", "name", "username", "groupid", "status"):
        assert a.get(name), f"<thread> without {name}: {a}"
    assert THREAD_ID.fullmatch(a["id"]), a
    int(a["groupid"])
    assert a["status"] in STATUSES, a
    assert a["type"] == "sleep"
    for name in ("created", "started", "ended"):
        if name in a:
            assert TIMESTAMP.fullmatch(a[name]), (name, a[name])
    assert "created" in a
    if a["status"] == "initialised":
        assert "started" not in a and "ended" not in a, a
    if a["status"] in RUNNING:
        assert "started" in a and "ended" not in a, a
    if a["status"] in ("completed", "failed"):
        assert "started" in a and "ended" in a, a
    if a["status"] == "cancelled":
        assert "ended" in a, a
    if "started" in a:
        assert a["created"] <= a["started"], a
    if "ended" in a:
        assert a.get("started", a["created"]) <= a["ended"], a
    assert int(a["warnings"]) >= 0 and int(a["errors"]) >= 0, a
    messages = el.findall("message")
    assert len(messages) <= 1
    for message in messages:
        assert message.text and message.text.strip(), "empty <message>"
    for progress in el.findall("progress"):
        current = int(progress.get("current"))
        total = progress.get("total")
        if total is not None and int(total) > 0:
            assert int(progress.get("percent")) == math.floor(100 * current / int(total))
        else:
            assert progress.get("percent") is None
    assert len(el.findall("progress")) <= 1
    return a


def snapshot(el: Any) -> tuple[Any, ...]:
    """Everything a client sees of a thread, for comparing two answers."""
    message = el.findtext("message")
    progress = el.find("progress")
    return (
        tuple(sorted(el.attrib.items())),
        message,
        None if progress is None else tuple(sorted(progress.attrib.items())),
    )


def start(http: httpx.Client, where: str = GROUP, **params: Any) -> tuple[httpx.Response, Any]:
    response = http.post(
        f"{where}/threads", data={"job": "sleep", **{k: str(v) for k, v in params.items()}}
    )
    assert response.status_code == 202, response.text
    el = parse_xml(response)
    check_thread(el)
    return response, el


def progress(http: httpx.Client, thread_id: str, where: str = GROUP) -> Any:
    response = http.get(f"{where}/threads/{thread_id}/progress")
    assert response.status_code == 200, response.text
    el = parse_xml(response)
    check_thread(el)
    return el


def wait_status(
    http: httpx.Client, thread_id: str, statuses: set[str], where: str = GROUP, timeout: float = 15
) -> Any:
    el = parse_xml(support.wait_status(http, thread_id, statuses, where, timeout))
    check_thread(el)
    return el


def wait_running(http: httpx.Client, thread_id: str, where: str = GROUP) -> Any:
    return parse_xml(support.wait_running(http, thread_id, where))


def wait_final(http: httpx.Client, thread_id: str, where: str = GROUP, timeout: float = 15) -> Any:
    return wait_status(http, thread_id, FINAL, where, timeout)


def iso(ms: int) -> str:
    dt = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def get_logs(http: httpx.Client, thread_id: str, where: str = GROUP, **query: Any) -> Any:
    response = http.get(f"{where}/threads/{thread_id}/logs", params=query)
    assert response.status_code == 200, response.text
    root = parse_xml(response)
    assert root.tag == "logs" and root.get("thread") == thread_id
    assert root.get("more") in ("true", "false")
    for event in root:
        assert event.tag == "event"
        assert event.get("level") in ("DEBUG", "INFO", "WARN", "ERROR")
        assert TIMESTAMP.fullmatch(event.get("datetime")), event.attrib
        assert iso(int(event.get("timestamp"))) == event.get("datetime")
    return root


def events(root: Any) -> list[tuple[int, str, str]]:
    return [(int(e.get("seq")), e.get("level"), e.text or "") for e in root]


def all_events(
    http: httpx.Client, thread_id: str, where: str = GROUP
) -> list[tuple[int, str, str]]:
    root = get_logs(http, thread_id, where)
    found = events(root)
    assert [seq for seq, _, _ in found] == list(range(1, len(found) + 1)), found
    assert int(root.get("total")) == len(found)
    assert root.get("more") == "false"
    return found


def status_events(found: list[tuple[int, str, str]]) -> list[tuple[int, str, str]]:
    return [e for e in found if e[2].startswith("Status:")]


def json_of(el: Any) -> dict[str, Any]:
    """The JSON object that mirrors a `<thread>` (docs/api.md#formats: numbers as JSON numbers)."""
    numbers = {"groupid", "warnings", "errors", "current", "total", "percent"}
    obj: dict[str, Any] = {k: int(v) if k in numbers else v for k, v in el.attrib.items()}
    for child in el:
        if child.tag == "message":
            obj["message"] = child.text
        elif child.tag == "progress":
            obj["progress"] = {k: int(v) for k, v in child.attrib.items()}
    return obj


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A second server running one thread at a time, so that others wait `initialised`."""
    for server, _tokens in running_server(tmp_path_factory.mktemp("single"), **{"max-running": 1}):
        yield server


# -- starting ---------------------------------------------------------------------------------
def test_start_answers_202_with_headers_and_the_stored_thread(server: Server) -> None:
    with server.client("contributor") as http:
        response, el = start(http, seconds=0.1, steps=2)
        a = check_thread(el)
        assert a["username"] == "contributor"
        assert a["groupid"] == "240"
        assert a["status"] in STATUSES - FINAL
        tid = a["id"]
        thread = f"{server.url}{GROUP}/threads/{tid}"
        assert response.headers["content-location"] == f"{thread}/progress"
        assert response.headers["location"] == f"{thread}/result"
        assert int(response.headers["retry-after"]) >= 0
        # already in the store: the progress URL and the task resource answer at once
        now = http.get(response.headers["content-location"])
        assert now.status_code == 200, now.text
        assert parse_xml(now).get("id") == tid
        task = http.get(f"{GROUP}/threads/{tid}")
        assert task.status_code == 200
        assert parse_xml(task).get("id") == tid
        done = wait_final(http, tid)
        assert done.get("status") == "completed"


@pytest.mark.parametrize(
    "content_type", ["application/xml", "application/xml;charset=utf-8", "text/xml; charset=UTF-8"]
)
def test_start_with_an_xml_body(server: Server, content_type: str) -> None:
    body = (
        b'<?xml version="1.0" encoding="utf-8"?>'
        b'<job name="sleep"><param name="seconds">0.1</param><param name="steps" value="3"/></job>'
    )
    with server.client("contributor") as http:
        response = http.post(
            f"{GROUP}/threads", content=body, headers={"Content-Type": content_type}
        )
        assert response.status_code == 202, response.text
        el = parse_xml(response)
        tid = check_thread(el)["id"]
        thread = f"{server.url}{GROUP}/threads/{tid}"
        assert response.headers["content-location"] == f"{thread}/progress"
        assert response.headers["location"] == f"{thread}/result"
        done = wait_final(http, tid)
        assert done.get("status") == "completed"
        assert done.find("progress").attrib == {"current": "3", "total": "3", "percent": "100"}


def test_start_with_a_multipart_form(server: Server) -> None:
    with server.client("contributor") as http:
        fields = {"job": (None, "sleep"), "seconds": (None, "0.05"), "steps": (None, "2")}
        response = http.post(f"{GROUP}/threads", files=fields)
        assert response.status_code == 202, response.text
        done = wait_final(http, check_thread(parse_xml(response))["id"])
        assert done.get("status") == "completed"
        assert done.find("progress").get("total") == "2"


def test_start_by_numeric_group_id_and_under_ps_api(server: Server) -> None:
    with server.client("contributor") as http:
        for where in ("/ps/service/groups/240", "/ps/api/groups/dev"):
            response, el = start(http, where, seconds=0.05, steps=1)
            assert el.get("groupid") == "240"
            follow = http.get(response.headers["content-location"])
            assert follow.status_code == 200, follow.text
            assert parse_xml(follow).get("id") == el.get("id")
            result = f"{server.url}{where}/threads/{el.get('id')}/result"
            assert response.headers["location"] == result


# -- statuses ---------------------------------------------------------------------------------
def test_initialised_while_max_running_is_busy_then_oldest_first(single: Server) -> None:
    with single.client("contributor") as http:
        _, blocker = start(http, seconds=60, steps=60)
        blocker_id = blocker.get("id")
        wait_running(http, blocker_id)
        waiting = []
        for _ in range(3):
            _, el = start(http, seconds=0.1, steps=1)
            assert el.get("status") == "initialised"
            waiting.append(el.get("id"))
            time.sleep(0.02)
        time.sleep(0.5)  # a claim would have happened by now if a slot were free
        for tid in waiting:
            el = progress(http, tid)
            a = check_thread(el)
            assert a["status"] == "initialised", a
            assert "started" not in a and "ended" not in a
            assert el.find("progress") is None
        listed = parse_xml(http.get(f"{GROUP}/threads", params={"status": "initialised"}))
        assert [t.get("id") for t in listed] == waiting[::-1]  # newest first
        assert listed.get("total") == "3"

        cancel = http.post(f"{GROUP}/threads/{blocker_id}/cancel")
        assert cancel.status_code == 200
        wait_status(http, blocker_id, {"cancelled"})
        done = [wait_final(http, tid) for tid in waiting]
        assert [d.get("status") for d in done] == ["completed"] * 3
        # one at a time, oldest first: each started only once the one before it had ended
        for before, after in itertools.pairwise(done):
            assert before.get("started") <= after.get("started")
            assert before.get("ended") <= after.get("started")


def test_inprogress_then_completed(server: Server) -> None:
    with server.client("contributor") as http:
        _, el = start(http, seconds=1.2, steps=3)
        tid = el.get("id")
        running = wait_running(http, tid)
        assert "started" in running.attrib and "ended" not in running.attrib
        percents = set()
        while True:
            now = progress(http, tid)
            if now.find("progress") is not None:
                percents.add(now.find("progress").get("percent"))
            if now.get("status") in FINAL:
                break
            time.sleep(0.05)
        assert {"33", "66"} & percents, percents  # floor(100 * 1/3), floor(100 * 2/3)
        a = check_thread(now)
        assert a["status"] == "completed"
        assert a["warnings"] == "0" and a["errors"] == "0"
        assert now.find("progress").attrib == {"current": "3", "total": "3", "percent": "100"}
        assert now.findtext("message") == "Slept 1.2 seconds in 3 steps"
        found = all_events(http, tid)
        assert [(lvl, text.split(" ")[1].rstrip(":")) for _, lvl, text in status_events(found)] == [
            ("INFO", "initialised"),
            ("INFO", "inprogress"),
            ("INFO", "completed"),
        ]
        assert found[-1][2].startswith("Status: completed")


@pytest.mark.slow  # waits on real time
def test_warning_and_error_are_transitory(server: Server) -> None:
    # steps of 0.8 s: warning at step 1, inprogress at 2, error at 3, inprogress at 4, then failed
    with server.client("contributor") as http:
        _, el = start(http, seconds=4, steps=5, warn=1, error=3)
        tid = el.get("id")
        seen: list[str] = []
        listed_as: dict[str, list[str]] = {}
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            now = progress(http, tid)
            a = check_thread(now)
            status = a["status"]
            if not seen or seen[-1] != status:
                seen.append(status)
                if status == "warning":
                    assert a["warnings"] == "1" and a["errors"] == "0"
                    assert now.findtext("message") == "Warning at step 1"
                if status == "error":
                    assert a["warnings"] == "1" and a["errors"] == "1"
                    assert now.findtext("message") == "Error at step 3"
                if status in ("warning", "error"):
                    for query in (status, "active"):
                        page = parse_xml(http.get(f"{GROUP}/threads", params={"status": query}))
                        listed_as.setdefault(status, []).extend(t.get("id") for t in page)
            if status in FINAL:
                break
            time.sleep(0.04)
        if seen[0] == "initialised":
            seen = seen[1:]
        assert seen == ["inprogress", "warning", "inprogress", "error", "inprogress", "failed"]
        assert listed_as["warning"].count(tid) == 2
        assert listed_as["error"].count(tid) == 2
        assert now.get("warnings") == "1" and now.get("errors") == "1"

        found = all_events(http, tid)
        texts = [(lvl, text) for _, lvl, text in found]
        assert ("WARN", "Warning at step 1") in texts
        assert ("ERROR", "Error at step 3") in texts
        warn_at = texts.index(("WARN", "Warning at step 1"))
        error_at = texts.index(("ERROR", "Error at step 3"))
        # back to inprogress after each, logged as a status change at INFO
        assert texts[warn_at + 1] == ("INFO", "Status: inprogress")
        assert texts[error_at + 1] == ("INFO", "Status: inprogress")
        for _, level, text in status_events(found):
            assert level == "INFO", (level, text)
        assert found[-1][2].startswith("Status: failed")


def test_failed_when_an_error_was_reported(server: Server) -> None:
    with server.client("contributor") as http:
        _, el = start(http, seconds=0.2, steps=2, error=1)
        done = wait_final(http, el.get("id"))
        a = check_thread(done)
        assert a["status"] == "failed"
        assert a["errors"] == "1" and a["warnings"] == "0"
        found = all_events(http, a["id"])
        assert ("ERROR", "Error at step 1") in [(lvl, text) for _, lvl, text in found]
        last = found[-1]
        assert last[1] == "INFO" and last[2].startswith("Status: failed"), last


def test_failed_when_the_job_raises(server: Server) -> None:
    with server.client("contributor") as http:
        _, el = start(http, seconds=0.2, steps=2, fail=1)
        response = wait_for(
            http,
            f"{GROUP}/threads/{el.get('id')}/progress",
            lambda r: bool(FINAL_TEXT.search(r.text)),
        )
        done = parse_xml(response)
        a = check_thread(done)
        assert a["status"] == "failed"
        # A built-in exception is named: RuntimeError is what `sleep` raises when asked to fail.
        assert done.findtext("message") == "RuntimeError: Failed at step 1 as asked"
        assert "Traceback" not in response.text and 'File "' not in response.text
        assert done.find("progress").get("current") == "1"
        found = all_events(http, a["id"])
        assert any(text == "RuntimeError: Failed at step 1 as asked" for _, _, text in found)
        assert any(text == "Status: failed: RuntimeError: Failed at step 1 as asked"
                   for _, _, text in found)
        assert any(text.startswith("Status: failed") for _, _, text in found)
        log_text = http.get(f"{GROUP}/threads/{a['id']}/logs").text
        assert "Traceback" not in log_text and 'File "' not in log_text


def test_status_change_to_failed_by_a_raise_is_logged_at_info(server: Server) -> None:
    with server.client("contributor") as http:
        _, el = start(http, seconds=0.1, steps=1, fail=1)
        wait_final(http, el.get("id"))
        changes = status_events(all_events(http, el.get("id")))
        assert changes[-1][2].startswith("Status: failed")
        assert [level for _, level, _ in changes] == ["INFO"] * len(changes), changes


def test_cancelled_and_final_never_changes(server: Server) -> None:
    with server.client("contributor") as http:
        _, long = start(http, seconds=30, steps=30)
        _, quick = start(http, seconds=0.05, steps=1)
        _, failing = start(http, seconds=0.05, steps=1, fail=1)
        wait_running(http, long.get("id"))
        cancel = http.post(f"{GROUP}/threads/{long.get('id')}/cancel")
        assert cancel.status_code == 200
        finals = {
            tid: wait_final(http, tid)
            for tid in (long.get("id"), quick.get("id"), failing.get("id"))
        }
        assert [f.get("status") for f in finals.values()] == ["cancelled", "completed", "failed"]
        cancelled = check_thread(finals[long.get("id")])
        assert "started" in cancelled and "ended" in cancelled
        before = {tid: snapshot(el) for tid, el in finals.items()}
        logs_before = {tid: all_events(http, tid) for tid in finals}
        time.sleep(0.3)
        for tid in finals:
            again = http.post(f"{GROUP}/threads/{tid}/cancel")
            assert again.status_code == 200
            for _ in range(3):
                assert snapshot(progress(http, tid)) == before[tid]
            assert all_events(http, tid) == logs_before[tid]


# -- logs -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def logged(server: Server) -> str:
    """A finished thread whose log is, in order: initialised, inprogress, WARN, inprogress,
    ERROR, inprogress, the closing message, failed (8 events)."""
    with server.client("contributor") as http:
        _, el = start(http, seconds=0.3, steps=3, warn=1, error=2)
        done = wait_final(http, el.get("id"))
        assert done.get("status") == "failed"
        return str(el.get("id"))


def test_log_events_in_order(server: Server, logged: str) -> None:
    with server.client("contributor") as http:
        found = all_events(http, logged)
    levels = [level for _, level, _ in found]
    assert levels == ["INFO", "INFO", "WARN", "INFO", "ERROR", "INFO", "INFO", "INFO"], found
    assert found[0][2].startswith("Status: initialised")
    assert found[1][2].startswith("Status: inprogress")
    assert found[2][2] == "Warning at step 1"
    assert found[4][2] == "Error at step 2"
    assert found[6][2] == "Slept 0.3 seconds in 3 steps"
    assert found[7][2].startswith("Status: failed")


def test_log_paging(server: Server, logged: str) -> None:
    with server.client("contributor") as http:
        pages = []
        since = 0
        while True:
            root = get_logs(http, logged, since=since, limit=3)
            assert root.get("total") == "8"
            pages.append(([int(e.get("seq")) for e in root], root.get("next"), root.get("more")))
            if root.get("more") == "false":
                break
            since = int(root.get("next"))
        assert pages == [([1, 2, 3], "3", "true"), ([4, 5, 6], "6", "true"), ([7, 8], "8", "false")]
        end = get_logs(http, logged, since=8)
        assert len(end) == 0 and end.get("more") == "false" and end.get("total") == "8"
        assert end.get("next") == "8"

        warn = get_logs(http, logged, level="WARN")
        assert [(int(e.get("seq")), e.get("level")) for e in warn] == [(3, "WARN"), (5, "ERROR")]
        assert warn.get("total") == "8"
        error = get_logs(http, logged, level="ERROR")
        assert [int(e.get("seq")) for e in error] == [5]
        info = get_logs(http, logged, level="INFO")
        assert len(info) == 8
        limited = get_logs(http, logged, level="WARN", limit=1)
        assert [int(e.get("seq")) for e in limited] == [3]
        assert limited.get("more") == "true"
        rest = get_logs(http, logged, level="WARN", since=limited.get("next"))
        assert [int(e.get("seq")) for e in rest] == [5] and rest.get("more") == "false"


def test_logs_as_text_one_line_per_event(server: Server, logged: str) -> None:
    with server.client("contributor") as http:
        root = get_logs(http, logged)
        response = http.get(f"{GROUP}/threads/{logged}/logs", headers={"Accept": "text/plain"})
        assert response.status_code == 200
        assert response.headers["content-type"].split(";")[0] == "text/plain"
        lines = response.text.splitlines()
        assert len(lines) == len(root) == 8
        for line, event in zip(lines, root, strict=True):
            assert event.get("level") in line
            assert (event.text or "") in line


def test_logs_as_json(server: Server, logged: str) -> None:
    with server.client("contributor") as http:
        response = http.get(
            f"{GROUP}/threads/{logged}/logs", headers={"Accept": "application/json"}
        )
        assert response.status_code == 200
        assert response.headers["content-type"].split(";")[0] == "application/json"
        data = response.json()
        assert data["total"] == 8 and data["next"] == 8 and data["more"] is False
        assert data["thread"] == logged
        assert [e["seq"] for e in data["logs"]] == list(range(1, 9))
        assert data["logs"][2]["level"] == "WARN"



def test_log_search_by_text(server: Server, logged: str) -> None:
    """`text` keeps the events holding it (A-Z in either case), with `level` and paging as
    ever; `total` is still the whole log. Contributors may; a reviewer may not read the log."""
    with server.client("contributor") as http:
        found = get_logs(http, logged, text="at STEP")
        assert [int(e.get("seq")) for e in found] == [3, 5]
        assert found.get("total") == "8" and found.get("next") == "5"
        errors = get_logs(http, logged, text="at step", level="ERROR")
        assert [int(e.get("seq")) for e in errors] == [5]
        first = get_logs(http, logged, text="status:", limit=2)
        assert [int(e.get("seq")) for e in first] == [1, 2] and first.get("more") == "true"
        rest = get_logs(http, logged, text="status:", since=first.get("next"))
        assert [int(e.get("seq")) for e in rest] == [4, 6, 8] and rest.get("more") == "false"
        assert len(get_logs(http, logged, text="no such text")) == 0
        assert len(get_logs(http, logged, text="")) == 8  # empty: no search
        for bad in ("x" * 201, "a\x01b"):
            response = http.get(f"{GROUP}/threads/{logged}/logs", params={"text": bad})
            assert response.status_code == 400
            error = parse_xml(response)
            assert error.get("id") == "0201" and "text" in error.findtext("message")
    with server.client("reviewer") as http:
        response = http.get(f"{GROUP}/threads/{logged}/logs", params={"text": "step"})
        assert response.status_code == 403

# -- lists ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def listed(server: Server) -> Iterator[dict[str, Any]]:
    """Four threads of known statuses, oldest first: a completed (approver), b failed (manager),
    c running (approver), d cancelled (manager); `since` isolates them from other tests'."""
    made: dict[str, Any] = {}
    with server.client("approver") as approver, server.client("manager") as manager:
        _, a = start(approver, seconds=0.05, steps=1)
        time.sleep(0.02)
        _, b = start(manager, seconds=0.05, steps=1, fail=1)
        time.sleep(0.02)
        _, c = start(approver, seconds=60, steps=60)
        time.sleep(0.02)
        _, d = start(manager, seconds=60, steps=60)
        wait_running(manager, d.get("id"))
        assert manager.post(f"{GROUP}/threads/{d.get('id')}/cancel").status_code == 200
        for el in (a, b, d):
            made[el.get("id")] = wait_final(manager, el.get("id"))
        made[c.get("id")] = wait_running(approver, c.get("id"))
        ids = {"a": a.get("id"), "b": b.get("id"), "c": c.get("id"), "d": d.get("id")}
        yield {
            "ids": ids,
            "since": a.get("created"),
            "threads": made,
            "created": {k: el.get("created") for k, el in zip("abcd", (a, b, c, d), strict=True)},
        }
        approver.post(f"{GROUP}/threads/{c.get('id')}/cancel")


def _list(http: httpx.Client, path: str = f"{GROUP}/threads", **query: Any) -> Any:
    response = http.get(path, params=query)
    assert response.status_code == 200, response.text
    root = parse_xml(response)
    assert root.tag == "threads"
    for el in root:
        check_thread(el)
    return root


def test_list_newest_first_with_status_filters(server: Server, listed: dict[str, Any]) -> None:
    ids, since = listed["ids"], listed["since"]

    def names(root: Any) -> list[str]:
        back = {v: k for k, v in ids.items()}
        return [back[el.get("id")] for el in root]

    with server.client("contributor") as http:
        cases = {
            "all": "dcba",
            "finished": "dba",
            "active": "c",
            "completed,failed": "ba",
            "cancelled": "d",
            "inprogress": "c",
            "initialised,completed": "a",
            "failed, cancelled": "db",
        }
        for status, expected in cases.items():
            root = _list(http, status=status, since=since)
            assert names(root) == list(expected), status
            assert root.get("total") == str(len(expected)), status
        default = _list(http, since=since)  # `active` by default
        assert names(default) == ["c"]
        for el in _list(http, status="all", since=since):
            assert el.get("status") == listed["threads"][el.get("id")].get("status")


def test_list_unknown_status_is_400(server: Server) -> None:
    with server.client("contributor") as http:
        for status in ("bogus", "complete", "all,nope"):
            response = http.get(f"{GROUP}/threads", params={"status": status})
            assert response.status_code == 400
            error = parse_xml(response)
            assert error.get("id") == "0201"
            assert "status" in error.findtext("message")


def test_list_filters_username_type_since_until(server: Server, listed: dict[str, Any]) -> None:
    ids, since, created = listed["ids"], listed["since"], listed["created"]
    with server.client("contributor") as http:
        approver = _list(http, status="all", since=since, username="approver")
        assert [el.get("id") for el in approver] == [ids["c"], ids["a"]]
        assert all(el.get("username") == "approver" for el in approver)
        assert _list(http, status="all", since=since, username="nobody").get("total") == "0"
        assert _list(http, status="all", since=since, type="sleep").get("total") == "4"
        unknown = _list(http, status="all", type="no-such-job")
        assert unknown.get("total") == "0" and len(unknown) == 0
        until_b = _list(http, status="all", since=since, until=created["b"])
        assert [el.get("id") for el in until_b] == [ids["b"], ids["a"]]
        from_c = _list(http, status="all", since=created["c"])
        assert [el.get("id") for el in from_c] == [ids["d"], ids["c"]]
        between = _list(http, status="all", since=created["b"], until=created["c"])
        assert [el.get("id") for el in between] == [ids["c"], ids["b"]]


def test_list_paging(server: Server, listed: dict[str, Any]) -> None:
    ids, since = listed["ids"], listed["since"]
    with server.client("contributor") as http:
        default = _list(http, status="all", since=since)
        assert (default.get("page"), default.get("pagesize")) == ("1", "100")
        first = _list(http, status="all", since=since, pagesize=2)
        assert (first.get("total"), first.get("page"), first.get("pagesize")) == ("4", "1", "2")
        assert [el.get("id") for el in first] == [ids["d"], ids["c"]]
        second = _list(http, status="all", since=since, pagesize=2, page=2)
        assert (second.get("total"), second.get("page")) == ("4", "2")
        assert [el.get("id") for el in second] == [ids["b"], ids["a"]]
        third = _list(http, status="all", since=since, pagesize=3, page=2)
        assert [el.get("id") for el in third] == [ids["a"]]
        beyond = _list(http, status="all", since=since, pagesize=2, page=3)
        assert len(beyond) == 0 and beyond.get("total") == "4"
        assert _list(http, status="all", pagesize=1000).get("pagesize") == "1000"
        too_big = http.get(f"{GROUP}/threads", params={"pagesize": 1001})
        assert too_big.status_code == 400
        error = parse_xml(too_big)
        assert error.get("id") == "0201"
        assert "pagesize" in error.findtext("message")


# -- JSON -------------------------------------------------------------------------------------
def test_json_mirrors_the_thread(server: Server, listed: dict[str, Any]) -> None:
    tid = listed["ids"]["b"]
    with server.client("contributor") as http:
        xml_el = progress(http, tid)
        expected = json_of(xml_el)
        assert (
            isinstance(expected["groupid"], int)
            and "message" in expected
            and "progress" in expected
        )
        by_accept = http.get(
            f"{GROUP}/threads/{tid}/progress", headers={"Accept": "application/json"}
        )
        assert by_accept.status_code == 200
        assert by_accept.headers["content-type"].split(";")[0] == "application/json"
        assert by_accept.json() == {"thread": expected}
        preferred = http.get(
            f"{GROUP}/threads/{tid}/progress",
            headers={"Accept": "application/json, application/xml;q=0.5"},
        )
        assert preferred.json() == {"thread": expected}
        by_suffix = http.get(f"/ps/api/groups/dev/threads/{tid}/progress.json")
        assert by_suffix.status_code == 200
        assert by_suffix.json() == {"thread": expected}
        as_xml = http.get(f"/ps/api/groups/dev/threads/{tid}/progress.xml")
        assert as_xml.status_code == 200
        assert snapshot(parse_xml(as_xml)) == snapshot(xml_el)
        task = http.get(f"/ps/api/groups/dev/threads/{tid}.json")
        assert task.status_code == 200 and task.json() == {"thread": expected}


def test_json_mirrors_the_list(server: Server, listed: dict[str, Any]) -> None:
    since = listed["since"]
    query = {"status": "finished", "since": since, "pagesize": 2}
    with server.client("contributor") as http:
        xml_root = _list(http, **query)
        expected_items = [json_of(el) for el in xml_root]
        for response in (
            http.get(f"{GROUP}/threads", params=query, headers={"Accept": "application/json"}),
            http.get("/ps/api/groups/dev/threads.json", params=query),
        ):
            assert response.status_code == 200, response.text
            assert response.headers["content-type"].split(";")[0] == "application/json"
            data = response.json()
            assert data["total"] == 3 and data["page"] == 1 and data["pagesize"] == 2
            assert data["threads"] == expected_items
            for item in data["threads"]:
                assert isinstance(item["groupid"], int)
                assert isinstance(item["warnings"], int) and isinstance(item["errors"], int)
                assert all(isinstance(v, int) for v in item["progress"].values())
        as_xml = http.get("/ps/api/groups/dev/threads.xml", params=query)
        assert as_xml.status_code == 200
        root = parse_xml(as_xml)
        assert [snapshot(el) for el in root] == [snapshot(el) for el in xml_root]
