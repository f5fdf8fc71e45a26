"""The published XSDs describe what threadsvc.xml.render writes; openapi.json covers every route."""

from __future__ import annotations

import dataclasses
import json
import re
from importlib import resources
from typing import Any

import pytest
from starlette.routing import Route

from tests.support import Server
from threadsvc.models import (
    FINAL,
    SERVER_GROUP_ID,
    Level,
    LogEvent,
    LogPage,
    Status,
    Thread,
    ThreadPage,
)
from threadsvc.runner.registry import Registry
from threadsvc.web.openapi import describe_jobs
from threadsvc.web.renderings import Renderings
from threadsvc.web.routes import routes
from threadsvc.xml import answers, render
from threadsvc.xml.schemas import SCHEMAS, schema, validate


@pytest.fixture(scope="module")
def world(in_process_world: tuple[Server, dict[str, str]]) -> tuple[Server, dict[str, str]]:
    """This module asks only what the app answers: served in this process."""
    return in_process_world

T0 = 1_795_334_400_123  # 2026-11-22T08:00:00.123Z
ID = "349f4fbcd872d514751f7809acf4d888"


def make_thread(status: Status = Status.INPROGRESS, **changes: Any) -> Thread:
    """A thread as the runner would have it in `status`: timestamps follow the status."""
    started = None if status is Status.INITIALISED else T0 + 7
    ended = T0 + 5_000 if status in FINAL else None
    if status is Status.CANCELLED and "started" not in changes:
        started = None  # the harder case: cancelled before it ever ran
    thread = Thread(
        id=ID,
        name="Sleep thread for group dev",
        username="jjones",
        group_id=240,
        job="sleep",
        params={"seconds": 1.0},
        status=status,
        created=T0,
        started=started,
        ended=ended,
        warnings=1 if status is Status.WARNING else 0,
        errors=1 if status in (Status.ERROR, Status.FAILED) else 0,
    )
    return dataclasses.replace(thread, **changes)


def xml(element: render.Element) -> bytes:
    return render.to_xml(element)


# -- every schema compiles ----------------------------------------------------------------------
@pytest.mark.parametrize("filename", sorted(set(SCHEMAS.values())))
def test_schema_compiles(filename: str) -> None:
    assert schema(filename) is schema(filename)  # compiled once, then cached


# -- what render writes is valid ----------------------------------------------------------------
@pytest.mark.parametrize("status", list(Status))
def test_bare_thread_in_every_status(status: Status) -> None:
    validate(xml(render.thread_element(make_thread(status))))


@pytest.mark.parametrize("status", list(Status))
def test_thread_with_message_and_progress_in_every_status(status: Status) -> None:
    thread = make_thread(
        status, message="Document pages/hr/pg143.xml is valid.", progress_current=636,
        progress_total=709,
    )
    document = xml(render.thread_element(thread))
    assert b'percent="89"' in document
    validate(document)


@pytest.mark.parametrize(
    ("current", "total"), [(0, None), (3, None), (0, 0), (0, 10), (10, 10), (None, 5)]
)
def test_thread_with_any_progress(current: int | None, total: int | None) -> None:
    thread = make_thread(progress_current=current, progress_total=total)
    validate(xml(render.thread_element(thread)))


def test_thread_with_message_only() -> None:
    validate(xml(render.thread_element(make_thread(message="Slept 1 second in 10 steps"))))


def test_server_level_thread() -> None:
    thread = make_thread(group_id=SERVER_GROUP_ID, name="Sleep thread for the server")
    document = xml(render.thread_element(thread))
    assert b'groupid="-1"' in document
    validate(document)


def test_thread_with_text_that_needs_escaping() -> None:
    thread = make_thread(message='<a> & "b" \u00e9\u6f22 \ufffd', name="x & <y>")
    validate(xml(render.thread_element(thread)))


def test_admin_sees_node_and_heartbeat() -> None:
    thread = make_thread(node="host-1-abcd", heartbeat=T0 + 900)
    document = xml(render.thread_element(thread, admin=True))
    assert b'node="host-1-abcd"' in document and b"heartbeat=" in document
    validate(document)
    validate(xml(render.thread_element(thread, admin=False)))


def test_renderings_follow_what_each_caller_sees() -> None:
    """A polled thread is rendered once per state it shows: an administrator's copy follows the
    heartbeat, a member's (which never shows it) is reused across heartbeats; the forms differ."""
    renderings = Renderings()
    beat = make_thread(node="n1", heartbeat=T0, version=4)
    later = dataclasses.replace(beat, heartbeat=T0 + 10_000)  # same version: no visible change
    assert renderings.document(beat, admin=False, as_json=False) is renderings.document(
        later, admin=False, as_json=False)
    first, second = (renderings.document(t, admin=True, as_json=False) for t in (beat, later))
    assert first != second and b"heartbeat=" in second
    member = renderings.document(beat, admin=False, as_json=False)
    assert b"heartbeat=" not in member and b"node=" not in member
    as_json = renderings.document(beat, admin=False, as_json=True)
    assert json.loads(as_json)["thread"]["id"] == beat.id
    line = renderings.line(beat, admin=False)
    assert isinstance(line, str) and "\n" not in line and line.startswith("<thread ")
    moved = dataclasses.replace(beat, version=5, message="next")
    assert b"next" in renderings.document(moved, admin=False, as_json=False)


def test_the_client_reads_what_the_server_renders() -> None:
    """threadsvc.xml.answers, the client's reader, against the server's own documents."""
    thread = make_thread(message="half way", progress_current=3, progress_total=6, node="n1",
                         heartbeat=T0 + 900)
    info = answers.read_thread(xml(render.thread_element(thread, admin=True)))
    assert (info.id, info.groupid, info.status, info.type, info.message) == (
        ID, 240, "inprogress", "sleep", "half way")
    assert (info.current, info.total, info.percent, info.node) == (3, 6, 50, "n1")
    assert not info.final and info.result_href is None
    page = answers.read_threads(xml(render.threads_element(
        ThreadPage([thread, make_thread(Status.COMPLETED)], total=9, page=2, pagesize=2))))
    assert (page.total, page.page, page.pagesize) == (9, 2, 2)
    assert [t.status for t in page.threads] == ["inprogress", "completed"]
    assert page.threads[1].final
    # a newer server's extra parts are ignored; a wrong document is Unreadable
    extended = b'<thread id="x" name="n" username="u" groupid="-1" status="failed" shiny="yes">' \
               b'<sparkle/><progress current="bad"/></thread>'
    odd = answers.read_thread(extended)
    assert (odd.groupid, odd.current, odd.final) == (-1, None, True)
    with pytest.raises(answers.Unreadable, match="expected <thread>"):
        answers.read_thread(b"<threads/>")
    with pytest.raises(answers.Unreadable):
        answers.read_thread(b"not xml")
    assert answers.read_error(b"<threads/>") is None
    error = answers.read_error(b'<error id="0203"><request>/p</request><message>m</message></error>')
    assert error == answers.ErrorAnswer("0203", "m", "/p")


def test_threads_page() -> None:
    threads = [
        make_thread(status, id=f"{n:032x}", message=f"message {n}", progress_current=n,
                    progress_total=7, node="n1", heartbeat=T0)
        for n, status in enumerate(Status)
    ]
    page = ThreadPage(threads, total=123, page=2, pagesize=7)
    validate(xml(render.threads_element(page, admin=True)))
    validate(xml(render.threads_element(page)))


def test_empty_threads_page() -> None:
    validate(xml(render.threads_element(ThreadPage([], total=0, page=1, pagesize=100))))


def test_thread_cancel_empty_and_full() -> None:
    validate(xml(render.thread_cancel_element(None)))
    validate(xml(render.thread_cancel_element(make_thread(Status.CANCELLED, message="Cancelled"))))
    validate(xml(render.thread_cancel_element(make_thread(Status.INPROGRESS), admin=True)))


def test_logs_page() -> None:
    events = [
        LogEvent(seq, T0 + seq, level, text)
        for seq, (level, text) in enumerate(
            [
                (Level.INFO, "Status: initialised (job sleep, by jjones)"),
                (Level.DEBUG, "detail"),
                (Level.WARN, "Warning at step 2"),
                (Level.ERROR, "Error at step 3 <&>"),
                (Level.INFO, ""),
            ],
            start=1,
        )
    ]
    validate(xml(render.logs_element(LogPage(ID, events, total=9, next=5, more=True))))
    validate(xml(render.logs_element(LogPage(ID, [], total=0, next=0, more=False))))


def test_error() -> None:
    validate(xml(render.error_element("0203", "/ps/service/threads/x", "No thread 'x'")))
    validate(xml(render.error_element("0500", "/", "")))


# -- what a later version will add --------------------------------------------------------------
RESULT = (
    '<result href="https://example.org/ps/service/results/abc?x=1" media-type="text/plain"'
    ' size="12" expires="2026-11-22T08:05:00.123Z" deletion="2026-11-22T09:00:00.123Z"/>'
)


def with_children(children: str, status: str = "completed") -> bytes:
    return (
        f'<thread id="{ID}" name="n" username="u" groupid="240" status="{status}" type="sleep"'
        f' created="2026-11-22T08:00:00.123Z">{children}</thread>'
    ).encode()


def test_thread_with_result_and_job_specific_elements() -> None:
    validate(with_children(f'<message>Done</message><progress current="1" total="1"/>{RESULT}'))
    validate(with_children(RESULT, status="failed"))
    validate(
        with_children(
            f'{RESULT}<v:report xmlns:v="urn:example:job" total="2"><v:x/></v:report><v:more'
            ' xmlns:v="urn:example:job"/>'
        )
    )


# -- what is not valid --------------------------------------------------------------------------
def good_thread() -> str:
    thread = make_thread(message="m", progress_current=1, progress_total=2)
    return xml(render.thread_element(thread)).decode()


INVALID_THREADS = {
    "status complete": good_thread().replace('status="inprogress"', 'status="complete"'),
    "status in upper case": good_thread().replace('status="inprogress"', 'status="INPROGRESS"'),
    "two messages": good_thread().replace("<message>m</message>", "<message>m</message>" * 2),
    "empty message": good_thread().replace("<message>m</message>", "<message></message>"),
    "self-closed message": good_thread().replace("<message>m</message>", "<message/>"),
    "message after progress": with_children('<progress current="1"/><message>m</message>').decode(),
    "two progresses": with_children('<progress current="1"/><progress current="2"/>').decode(),
    "progress without current": with_children('<progress total="2"/>').decode(),
    "negative progress": with_children('<progress current="-1"/>').decode(),
    "result before progress": with_children(f'{RESULT}<progress current="1"/>').decode(),
    "result without href": with_children(re.sub(r' href="[^"]*"', "", RESULT)).decode(),
    "job element before result": with_children(f'<v:x xmlns:v="urn:v"/>{RESULT}').decode(),
    "unqualified job element": with_children("<report/>").decode(),
    "missing id": re.sub(r' id="[0-9a-f]+"', "", good_thread()),
    "upper-case id": good_thread().replace(ID, ID.upper()),
    "short id": good_thread().replace(ID, ID[:31]),
    "missing name": good_thread().replace(' name="Sleep thread for group dev"', ""),
    "missing username": good_thread().replace(' username="jjones"', ""),
    "missing groupid": good_thread().replace(' groupid="240"', ""),
    "missing status": good_thread().replace(' status="inprogress"', ""),
    "groupid 0": good_thread().replace('groupid="240"', 'groupid="0"'),
    "groupid -2": good_thread().replace('groupid="240"', 'groupid="-2"'),
    "timestamp without milliseconds": good_thread().replace(
        'created="2026-11-22T08:00:00.123Z"', 'created="2026-11-22T08:00:00Z"'),
    "timestamp with an offset": good_thread().replace(
        'created="2026-11-22T08:00:00.123Z"', 'created="2026-11-22T08:00:00.123+00:00"'),
    "impossible timestamp": good_thread().replace(
        'created="2026-11-22T08:00:00.123Z"', 'created="2026-13-22T08:00:00.123Z"'),
    "negative warnings": good_thread().replace('warnings="0"', 'warnings="-1"'),
    "unknown attribute": good_thread().replace("<thread ", '<thread colour="red" '),
    "text in thread": good_thread().replace("<message>", "oops<message>"),
}


@pytest.mark.parametrize("case", list(INVALID_THREADS))
def test_invalid_thread_is_rejected(case: str) -> None:
    document = INVALID_THREADS[case]
    assert document != good_thread(), "the case changes nothing"
    with pytest.raises(ValueError):
        validate(document.encode())


def test_the_good_thread_used_by_negative_tests_is_valid() -> None:
    validate(good_thread().encode())


INVALID_OTHERS = {
    "error without request": "<error id='0100'><message>m</message></error>",
    "error without message": "<error id='0100'><request>/</request></error>",
    "error without id": "<error><request>/</request><message>m</message></error>",
    "error id of 3 digits": "<error id='100'><request>/</request><message>m</message></error>",
    "error parts swapped": "<error id='0100'><message>m</message><request>/</request></error>",
    "threads without total": "<threads page='1' pagesize='100'/>",
    "threads page 0": "<threads total='0' page='0' pagesize='100'/>",
    "threads pagesize 1001": "<threads total='0' page='1' pagesize='1001'/>",
    "threads holding an error": (
        "<threads total='0' page='1' pagesize='1'><error id='0100'><request>/</request>"
        "<message>m</message></error></threads>"
    ),
    "thread-cancel with two threads": (
        "<thread-cancel>" + good_thread().split("?>", 1)[1] * 2 + "</thread-cancel>"
    ),
    "logs more=1": f"<logs thread='{ID}' total='0' next='0' more='1'/>",
    "logs without thread": "<logs total='0' next='0' more='false'/>",
    "event level WARNING": (
        f"<logs thread='{ID}' total='1' next='1' more='false'><event seq='1' timestamp='1'"
        " datetime='1970-01-01T00:00:00.001Z' level='WARNING'>w</event></logs>"
    ),
    "event seq 0": (
        f"<logs thread='{ID}' total='1' next='1' more='false'><event seq='0' timestamp='1'"
        " datetime='1970-01-01T00:00:00.001Z' level='INFO'>w</event></logs>"
    ),
    "event with a child": (
        f"<logs thread='{ID}' total='1' next='1' more='false'><event seq='1' timestamp='1'"
        " datetime='1970-01-01T00:00:00.001Z' level='INFO'><b/></event></logs>"
    ),
    "no schema for the root": "<job name='sleep'/>",
    "namespaced root": f"<t:thread xmlns:t='urn:x' id='{ID}'/>",
    "not well-formed": "<thread",
    "a DOCTYPE": (
        "<!DOCTYPE error [<!ENTITY e 'x'>]>"
        "<error id='0100'><request>&e;</request><message/></error>"
    ),
}


@pytest.mark.parametrize("case", list(INVALID_OTHERS))
def test_invalid_document_is_rejected(case: str) -> None:
    with pytest.raises(ValueError):
        validate(INVALID_OTHERS[case].encode())


def test_the_error_names_the_problem() -> None:
    with pytest.raises(ValueError, match="complete"):
        validate(INVALID_THREADS["status complete"].encode())


def test_jobs_lists() -> None:
    """Every parameter type, bound and flag the built-in and test jobs declare."""
    registry = Registry.load(["tests.jobs_for_tests"])
    validate(xml(render.jobs_element(registry)))
    validate(xml(render.jobs_element([])))


# -- openapi.json -------------------------------------------------------------------------------
def openapi() -> dict[str, Any]:
    data = (resources.files("threadsvc") / "schemas" / "openapi.json").read_bytes()
    loaded: dict[str, Any] = json.loads(data)
    return loaded


def test_openapi_is_openapi_3() -> None:
    doc = openapi()
    assert re.fullmatch(r"3\.\d+\.\d+", doc["openapi"])
    assert doc["info"]["title"] and doc["info"]["version"]
    assert "/ps/api" in doc["info"]["description"]


def test_openapi_describes_every_route_and_method() -> None:
    paths = openapi()["paths"]
    for route in routes():
        assert isinstance(route, Route)
        path = re.sub(r"\{(\w+)(:\w+)?\}", r"{\1}", route.path)  # Starlette {id:str} -> {id}
        assert path in paths, f"{path} is not in openapi.json"
        for method in (route.methods or set()) - {"HEAD"}:
            assert method.lower() in paths[path], f"{method} {path} is not in openapi.json"


def test_openapi_references_resolve() -> None:
    doc = openapi()
    text = json.dumps(doc)
    for ref in set(re.findall(r'"\$ref": "#/([^"]+)"', text)):
        node: Any = doc
        for part in ref.split("/"):
            node = node[part]


def test_openapi_is_valid_when_a_validator_is_installed() -> None:
    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate(openapi())


# -- against the real server --------------------------------------------------------------------
def test_openapi_is_served_without_credentials(server: Server) -> None:
    """What is served is the template with the server's jobs (the built-in ones and `purge`)."""
    with server.client() as http:
        response = http.get("/ps/service/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    served = response.json()
    assert served["paths"] == openapi()["paths"]
    mapping = served["components"]["schemas"]["JobForm"]["discriminator"]["mapping"]
    # the built-in jobs, `purge`, and those of packages installed by entry point (the example)
    assert list(mapping) == sorted({"purge", *(spec.name for spec in Registry.load())})
    expected = describe_jobs(openapi(), Registry.load())["components"]["schemas"]
    for name in ("SleepForm", "SleepXML", "ValidateForm", "TransformForm", "TransformXML"):
        assert served["components"]["schemas"][name] == expected[name]
    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate(served)


def test_the_server_answers_valid_documents(server: Server) -> None:
    """What the running server sends validates too: errors, lists, a thread, its log, a cancel."""
    with server.client() as anonymous:
        validate(anonymous.get("/ps/service/groups/dev/threads").content)  # 401
    with server.client("admin") as http:
        started = http.post(
            "/ps/service/groups/dev/threads", data={"job": "sleep", "seconds": "30", "steps": "3"}
        )
        assert started.status_code == 202, started.text
        validate(started.content)
        progress = started.headers["content-location"]
        validate(http.get(progress).content)
        base = progress.rsplit("/", 1)[0]
        validate(http.get(f"{base}/logs").content)
        validate(http.get("/ps/service/threads?status=all").content)
        validate(http.get("/ps/service/groups/dev/threads").content)
        validate(http.post(f"{base}/cancel").content)
        validate(http.post(f"/ps/service/groups/dev/threads/{'0' * 32}/cancel").content)
        for missing in (f"/ps/service/threads/{'0' * 32}", "/ps/service/nowhere"):
            answer = http.get(missing)
            assert answer.status_code == 404
            validate(answer.content)
        bad = http.get("/ps/service/threads?pagesize=1001")
        assert bad.status_code == 400
        validate(bad.content)
