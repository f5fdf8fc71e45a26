"""The `validate` job: every schema language, sets, malformed documents and crafted uploads
run in-process through threadsvc.testing (the real runner on a SQLite store); what needs the
server (multipart uploads, a listener that must hear nothing, the server's memory and log,
400s and 403s, cancel over HTTP) against a real one. Crafted attacks are in
tests/data/validate/attacks.

Attack files that name the network use `PORT`, replaced here by the port of a listener that
counts connections: none may ever arrive. Nothing of /etc/passwd may reach a log or a report.
"""

from __future__ import annotations

import io
import re
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from lxml import etree

from tests.support import (
    Listener,
    Server,
    Upload,
    file,
    running_server,
    thread_id,
    wait_final,
    wait_for,
    zipped,
)
from threadsvc.models import Status
from threadsvc.testing import JobRunner, Outcome
from threadsvc.xml.schemas import validate as validate_published

DATA = Path(__file__).parent / "data" / "validate"
ATTACKS = DATA / "attacks"
GROUP = "/ps/service/groups/dev"
PASSWD_LINE = re.compile(r"\w+:[x*!]?:\d+:\d+:")  # what a line of /etc/passwd looks like


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    for running, _ in running_server(tmp_path_factory.mktemp("validate"), **{"max-running": 8}):
        yield running


@pytest.fixture
def listener() -> Iterator[Listener]:
    """Records every connection, answering a little XML."""
    with Listener(b'<!ENTITY leak "LEAKED-OVER-HTTP">') as item:
        yield item


# -- helpers ------------------------------------------------------------------------------------
def post(http: httpx.Client, documents: list[Upload], schema: Upload | None = None,
         **fields: str) -> httpx.Response:
    files = [("documents", (name, data, "application/xml")) for name, data in documents]
    if schema is not None:
        files.append(("schema", (schema[0], schema[1], "application/octet-stream")))
    return http.post(f"{GROUP}/threads", data={"job": "validate", **fields}, files=files)


def start(http: httpx.Client, documents: list[Upload], schema: Upload | None = None,
          **fields: str) -> str:
    response = post(http, documents, schema, **fields)
    assert response.status_code == 202, response.text
    return thread_id(response)


def finish(http: httpx.Client, tid: str, timeout: float = 60) -> Any:
    """The thread once final, checked against thread.xsd."""
    response = wait_final(http, tid, timeout=timeout)
    validate_published(response.content)
    return etree.fromstring(response.content)


def report(http: httpx.Client, tid: str) -> Any:
    """The result, downloaded through its pre-signed link and checked against
    validation-report.xsd."""
    answer = http.get(f"{GROUP}/threads/{tid}/result")
    assert answer.status_code == 302, answer.text
    response = http.get(answer.headers["location"])
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/xml")
    validate_published(response.content)
    root = etree.fromstring(response.content)
    assert root.tag == "validation-report"
    assert int(root.get("total")) == int(root.get("valid")) + int(root.get("invalid"))
    assert int(root.get("total")) == len(root)
    return root


def run(job_runner: JobRunner, documents: list[Upload], schema: Upload | None = None,
        **fields: str) -> Outcome:
    """The validate job run in-process to its end."""
    files: dict[str, Any] = {"documents": documents}
    if schema is not None:
        files["schema"] = schema
    return job_runner.run("validate", fields, files)


def report_of(outcome: Outcome) -> Any:
    """The result of a run, checked against validation-report.xsd."""
    assert outcome.result is not None, outcome.message
    assert outcome.media_type == "application/xml"
    validate_published(outcome.result)
    root = etree.fromstring(outcome.result)
    assert root.tag == "validation-report"
    assert int(root.get("total")) == int(root.get("valid")) + int(root.get("invalid"))
    assert int(root.get("total")) == len(root)
    return root


def events_of(outcome: Outcome) -> list[tuple[str, str]]:
    return [(event.level.name, event.text) for event in outcome.events]


def logs(http: httpx.Client, tid: str) -> list[tuple[str, str]]:
    response = http.get(f"{GROUP}/threads/{tid}/logs", params={"limit": 10000})
    assert response.status_code == 200, response.text
    return [(e.get("level"), e.text or "") for e in etree.fromstring(response.content)]


def statuses(root: Any) -> dict[str, str]:
    return {d.get("path"): d.get("status") for d in root}


def findings(root: Any, path: str) -> list[tuple[str, int, int, str]]:
    (document,) = [d for d in root if d.get("path") == path]
    return [(f.get("level"), int(f.get("line")), int(f.get("column")), f.text or "")
            for f in document]


def assert_no_leak(*texts: str) -> None:
    for text in texts:
        assert not PASSWD_LINE.search(text), text
        assert "LEAKED" not in text and "SECRET-IN-FILE" not in text, text


# -- every schema language ----------------------------------------------------------------------
SCHEMAS = ["book.xsd", "book.rng", "book.rnc", "book.sch", "book.dtd"]
VALID = sorted(DATA.glob("valid/*.xml"))


@pytest.mark.parametrize("schema", SCHEMAS)
def test_a_valid_set_completes(job_runner: JobRunner, schema: str) -> None:
    outcome = run(job_runner, [file(p) for p in VALID], file(DATA / schema))
    assert outcome.status is Status.COMPLETED, outcome.message
    assert outcome.thread.name == "Validation thread for group testing"
    assert outcome.errors == 0
    assert outcome.progress == (3, 3)
    assert outcome.message == "Validated 3 documents: 3 valid, 0 invalid"
    root = report_of(outcome)
    events = events_of(outcome)
    kind = {"sch": "schematron"}.get(schema.split(".")[1], schema.split(".")[1])
    assert root.get("schema") == schema and root.get("schema-type") == kind
    assert (root.get("total"), root.get("valid"), root.get("invalid")) == ("3", "3", "0")
    assert statuses(root) == {"moby.xml": "valid", "pamphlet.xml": "valid", "walden.xml": "valid"}
    for path in statuses(root):
        assert ("INFO", f"Document {path} is valid.") in events
    if schema == "book.sch":  # the warning-role assert: a warning, and still valid
        assert findings(root, "pamphlet.xml") == [
            ("warning", 3, 0, "A book of one chapter is probably a pamphlet")]
        warning = "Document pamphlet.xml, line 3, column 0: A book of one chapter is probably"
        assert ("WARN", f"{warning} a pamphlet") in events
        assert outcome.warnings == 1
    else:
        assert all(len(d) == 0 for d in root)
        assert not any(level in ("WARN", "ERROR") for level, _ in events)


@pytest.mark.parametrize("schema", SCHEMAS)
def test_an_invalid_document_fails_the_thread_with_the_report(job_runner: JobRunner,
                                                             schema: str) -> None:
    documents = [file(p) for p in VALID] + [file(DATA / "invalid" / "untitled.xml")]
    outcome = run(job_runner, documents, file(DATA / schema))
    assert outcome.status is Status.FAILED
    assert outcome.message == "Validated 4 documents: 3 valid, 1 invalid"
    root = report_of(outcome)  # a failed thread carries its report
    events = events_of(outcome)
    assert (root.get("total"), root.get("valid"), root.get("invalid")) == ("4", "3", "1")
    assert statuses(root)["untitled.xml"] == "invalid"
    found = findings(root, "untitled.xml")
    assert found and all(level == "error" and line >= 3 for level, line, _, _ in found)
    errors = [text for level, text in events if level == "ERROR"]
    assert len(errors) == len(found) == outcome.errors
    for _, line, column, text in found:
        assert f"Document untitled.xml, line {line}, column {column}: {text}" in errors
    assert ("INFO", "Document untitled.xml is valid.") not in events
    if schema == "book.sch":
        assert [text for *_, text in found] == ["A book needs a title",
                                                "Chapter zero is out of order"]


def test_internal_dtd_subsets_when_no_schema_is_given(job_runner: JobRunner) -> None:
    documents = [file(p) for p in sorted(DATA.glob("internal/*.xml"))]
    outcome = run(job_runner, documents)
    root = report_of(outcome)
    same = run(job_runner, documents, None, **{"schema-type": "dtd"})
    assert statuses(report_of(same)) == statuses(root)
    assert outcome.status is Status.FAILED
    assert root.get("schema-type") == "dtd" and root.get("schema") is None
    # memo.xml uses an internal entity: fine against its own DTD
    assert statuses(root) == {"bad-memo.xml": "invalid", "memo.xml": "valid",
                              "no-subset.xml": "invalid"}
    assert [line for _, line, _, _ in findings(root, "bad-memo.xml")] == [7, 9]
    assert "no internal DTD subset" in findings(root, "no-subset.xml")[0][3]


def test_schema_type_names_the_language_of_any_file_name(job_runner: JobRunner) -> None:
    outcome = run(job_runner, [file(VALID[0])], file(DATA / "book.rnc", "book-schema.txt"),
                  **{"schema-type": "rnc"})
    assert outcome.status is Status.COMPLETED
    assert report_of(outcome).get("schema-type") == "rnc"


# -- sets -----------------------------------------------------------------------------------------
def book(i: int, valid: bool = True) -> bytes:
    title = f"<title>Book {i}</title>" if valid else ""
    return f'<book id="b{i}">{title}<chapter n="1">One</chapter></book>'.encode()


def test_two_thousand_documents_in_a_zip(server: Server) -> None:
    entries = [(f"books/{i // 100:02d}/book-{i:04d}.xml", book(i, valid=i % 200 != 7))
               for i in range(2000)]
    began = time.monotonic()
    with server.client("contributor") as http:
        tid = start(http, [zipped(entries)], file(DATA / "book.xsd"))
        thread = finish(http, tid, timeout=120)
        elapsed = time.monotonic() - began
        root = report(http, tid)
    assert thread.get("status") == "failed"  # ten invalid documents
    assert thread.find("progress").attrib == {"current": "2000", "total": "2000",
                                              "percent": "100"}
    assert (root.get("total"), root.get("valid"), root.get("invalid")) == ("2000", "1990", "10")
    assert [d.get("path") for d in root] == [name for name, _ in entries]  # the zip's order
    invalid = [d.get("path") for d in root if d.get("status") == "invalid"]
    assert invalid == [f"books/{i // 100:02d}/book-{i:04d}.xml" for i in range(7, 2000, 200)]
    assert thread.get("errors") == "10"
    assert elapsed < 60, elapsed


def test_files_and_zips_together(job_runner: JobRunner) -> None:
    documents = [file(VALID[0]), zipped([("more/a.xml", book(1)), ("more/b.xml", book(2))]),
                 file(VALID[1], "dir\\walden.xml")]
    outcome = run(job_runner, documents, file(DATA / "book.xsd"))
    assert outcome.status is Status.COMPLETED
    assert list(statuses(report_of(outcome))) == ["moby.xml", "more/a.xml", "more/b.xml",
                                                  "walden.xml"]


def test_a_malformed_document_is_a_finding_and_the_others_are_validated(
    job_runner: JobRunner,
) -> None:
    documents = [file(VALID[0]), file(DATA / "malformed.xml"), file(VALID[2])]
    outcome = run(job_runner, documents, file(DATA / "book.xsd"))
    root = report_of(outcome)
    events = events_of(outcome)
    assert outcome.status is Status.FAILED
    assert statuses(root) == {"moby.xml": "valid", "malformed.xml": "invalid",
                              "walden.xml": "valid"}
    ((level, line, column, text),) = findings(root, "malformed.xml")
    assert (level, line, column) == ("error", 5, 8)
    assert text.startswith("Not well-formed: Opening and ending tag mismatch")
    assert ("ERROR", f"Document malformed.xml, line 5, column 8: {text}") in events
    assert ("INFO", "Document walden.xml is valid.") in events  # validated after it


def test_a_set_without_documents_fails_clearly(job_runner: JobRunner) -> None:
    outcome = run(job_runner, [zipped([("books/", b"")])], file(DATA / "book.xsd"))  # a folder
    assert outcome.status is Status.FAILED and outcome.result is None
    assert outcome.message == "No documents to validate: the upload holds no files"


# -- attacks in documents -------------------------------------------------------------------------
@pytest.mark.parametrize("schema", ["book.xsd", "book.dtd", None])
def test_xxe_is_never_read(server: Server, listener: Listener, schema: str | None) -> None:
    port = str(listener.port)
    documents = [file(ATTACKS / "xxe-file.xml"), file(ATTACKS / "xxe-http.xml", PORT=port),
                 file(ATTACKS / "xxe-attribute.xml"), file(ATTACKS / "xxe-parameter.xml", PORT=port)]
    with server.client("contributor") as http:
        tid = start(http, documents, file(DATA / schema) if schema else None)
        thread = finish(http, tid)
        body = http.get(http.get(f"{GROUP}/threads/{tid}/result").headers["location"]).text
        root = report(http, tid)
        events = logs(http, tid)
    assert thread.get("status") == "failed"
    assert listener.connections == 0
    assert_no_leak(body, *(text for _, text in events), server.log.read_text())
    for path in ("xxe-file.xml", "xxe-http.xml"):
        assert statuses(root)[path] == "invalid"
        assert findings(root, path)[0][3] == ("Entity &xxe; is not loaded: external entities "
                                              "are never read")
    assert "Attribute references external entity" in findings(root, "xxe-attribute.xml")[0][3]
    if schema == "book.xsd":  # the remote parameter entity is simply not fetched
        assert statuses(root)["xxe-parameter.xml"] == "valid"


def server_peak_kib(server: Server) -> int:
    assert server.process is not None
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1))  # type: ignore[union-attr]


@pytest.mark.parametrize("schema", ["book.xsd", None])
def test_billion_laughs_is_a_quick_finding(server: Server, schema: str | None) -> None:
    documents = [file(ATTACKS / "billion-laughs.xml"),
                 file(ATTACKS / "billion-laughs-attribute.xml"), file(VALID[0])]
    before = server_peak_kib(server)
    began = time.monotonic()
    with server.client("contributor") as http:
        tid = start(http, documents, file(DATA / schema) if schema else None)
        thread = finish(http, tid, timeout=30)
        root = report(http, tid)
    assert time.monotonic() - began < 10
    assert server_peak_kib(server) - before < 100 * 1024  # not the gigabytes of an expansion
    assert thread.get("status") == "failed"
    for path in ("billion-laughs.xml", "billion-laughs-attribute.xml"):
        assert statuses(root)[path] == "invalid"
        assert "amplification" in findings(root, path)[0][3]
    assert statuses(root)["moby.xml"] == ("valid" if schema else "invalid")


@pytest.mark.parametrize("schema", ["book.xsd", None])
def test_an_external_dtd_is_never_loaded(server: Server, listener: Listener,
                                         schema: str | None) -> None:
    documents = [file(ATTACKS / "external-dtd-http.xml", PORT=str(listener.port)),
                 file(ATTACKS / "external-dtd-file.xml")]
    with server.client("contributor") as http:
        tid = start(http, documents, file(DATA / schema) if schema else None)
        finish(http, tid)
        root = report(http, tid)
        events = logs(http, tid)
    assert listener.connections == 0
    assert_no_leak(*(text for _, text in events))
    if schema:  # otherwise fine documents: their DOCTYPE is not followed
        assert set(statuses(root).values()) == {"valid"}
    else:  # no internal subset, and the external one is not read
        for document in root:
            assert document.get("status") == "invalid"
            assert "external DTDs are never loaded" in document[0].text


# -- attacks in uploads ---------------------------------------------------------------------------
def test_a_zip_bomb_fails_the_thread(job_runner: JobRunner) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("fine.xml", book(1))
        with archive.open("bomb.xml", "w", force_zip64=True) as entry:
            chunk = b"\0" * (1024 * 1024)
            for _ in range(200):  # 200 MiB of zeros, about 200 KiB compressed
                entry.write(chunk)
    bomb = buffer.getvalue()
    assert len(bomb) < 1024 * 1024
    outcome = run(job_runner, [("bomb.zip", bomb)], file(DATA / "book.xsd"))
    events = events_of(outcome)
    assert outcome.status is Status.FAILED and outcome.result is None
    assert re.fullmatch(r"bomb\.xml expands \d+ times \(a zip bomb\?\)", outcome.message or "")
    assert not any("is valid" in text for _, text in events)  # refused before reading any


def test_a_zip_slip_fails_the_thread_and_writes_nothing(server: Server) -> None:
    slip = zipped([("ok.xml", book(1)), ("../../evil.xml", book(2))], "slip.zip")
    with server.client("contributor") as http:
        tid = start(http, [slip], file(DATA / "book.xsd"))
        thread = finish(http, tid)
        assert http.get(f"{GROUP}/threads/{tid}/result").status_code == 409
    assert thread.get("status") == "failed"
    assert thread.findtext("message") == "The path '../../evil.xml' leaves the document set"
    for top in (server.directory, server.directory.parent):
        assert not list(top.rglob("evil.xml"))


# -- attacks in schemas ---------------------------------------------------------------------------
REFERENCE = "The schema {} refers to another file ({} on line {})"
OUTSIDE = [
    ("include-passwd.xsd", REFERENCE.format("include-passwd.xsd", "xs:include 'file:///etc/passwd'",
                                            4) + ": a schema must be one self-contained file"),
    ("import-http.xsd", REFERENCE.format("import-http.xsd",
                                         "xs:import 'http://127.0.0.1:PORT/evil.xsd'", 4)),
    ("external-ref.rng", REFERENCE.format("external-ref.rng", "externalRef 'file:///etc/passwd'",
                                          4)),
    ("include.rnc", REFERENCE.format("include.rnc", "include", 2)),
    ("include.sch", REFERENCE.format("include.sch", "sch:include 'file:///etc/passwd'", 4)),
    ("parameter-entity.dtd", ("The DTD parameter-entity.dtd cannot be used: file:///etc/passwd "
                              "is not loaded: a DTD schema must be self-contained")),
]


@pytest.mark.parametrize(("schema", "message"), OUTSIDE)
def test_a_schema_that_reaches_outside_fails_clearly(server: Server, listener: Listener,
                                                     schema: str, message: str) -> None:
    port = str(listener.port)
    with server.client("contributor") as http:
        tid = start(http, [file(VALID[0])], file(ATTACKS / schema, PORT=port))
        thread = finish(http, tid)
        events = logs(http, tid)
        assert http.get(f"{GROUP}/threads/{tid}/result").status_code == 409
    assert thread.get("status") == "failed"
    assert thread.findtext("message").startswith(message.replace("PORT", port))
    assert listener.connections == 0
    assert_no_leak(*(text for _, text in events))


def test_schematron_document_function_is_denied(server: Server, tmp_path: Path) -> None:
    secret = tmp_path / "secret.xml"
    secret.write_text("<secret>SECRET-IN-FILE</secret>")
    schema = file(ATTACKS / "document-function.sch", **{"SECRET-URL": secret.as_uri()})
    with server.client("contributor") as http:
        tid = start(http, [file(VALID[0])], schema)
        finish(http, tid)
        root = report(http, tid)
        events = logs(http, tid)
    ((level, _, _, text),) = findings(root, "moby.xml")
    assert level == "error" and "read rights for" in text and "denied" in text
    assert_no_leak(*(text for _, text in events), etree.tostring(root).decode())


def test_a_broken_schema_fails_clearly(job_runner: JobRunner) -> None:
    outcome = run(job_runner, [file(VALID[0])], ("broken.rnc", b"start = element a { text "))
    assert outcome.status is Status.FAILED
    assert (outcome.message or "").startswith(
        "The schema broken.rnc is not RELAX NG compact syntax")


# -- parameters -----------------------------------------------------------------------------------
def test_parameters_are_checked_before_the_thread_starts(server: Server) -> None:
    doc = [file(VALID[0])]
    with server.client("contributor") as http:
        unknown = post(http, doc, ("rules.txt", b"<x/>"))
        assert unknown.status_code == 400 and 'id="0201"' in unknown.text
        assert "Parameter 'schema-type' is required" in unknown.text and "rules.txt" in unknown.text
        bogus = post(http, doc, file(DATA / "book.xsd"), **{"schema-type": "wxs"})
        assert bogus.status_code == 400 and "Parameter 'schema-type' must be one of" in bogus.text
        alone = post(http, doc, None, **{"schema-type": "xsd"})
        assert alone.status_code == 400 and "Parameter 'schema' is required" in alone.text
        missing = http.post(f"{GROUP}/threads", data={"job": "validate"})
        assert missing.status_code == 400 and "Parameter 'documents' is required" in missing.text
        text = http.post(f"{GROUP}/threads", data={"job": "validate", "documents": "a.xml"})
        assert text.status_code == 400 and "'documents' must be a file" in text.text
        two = http.post(f"{GROUP}/threads", data={"job": "validate"}, files=[
            ("documents", ("a.xml", b"<a/>")), ("schema", ("a.xsd", b"<a/>")),
            ("schema", ("b.xsd", b"<b/>"))])
        assert two.status_code == 400 and "'schema' is given more than once" in two.text
        listed = http.get(f"{GROUP}/threads", params={"type": "validate", "status": "all"})
        before = listed.text.count("<thread ")
    with server.client("reviewer") as http:
        assert post(http, doc, file(DATA / "book.xsd")).status_code == 403
    with server.client("contributor") as http:
        listed = http.get(f"{GROUP}/threads", params={"type": "validate", "status": "all"})
        assert listed.text.count("<thread ") == before  # none of those started a thread


# -- cancel ---------------------------------------------------------------------------------------
def test_cancel_while_it_runs(server: Server) -> None:
    entries = [(f"book-{i:05d}.xml", book(i)) for i in range(20_000)]
    with server.client("contributor") as http:
        tid = start(http, [zipped(entries)], file(DATA / "book.xsd"))
        wait_for(http, f"{GROUP}/threads/{tid}/progress",
                 lambda r: re.search(r'<progress current="[1-9]', r.text) is not None, 30)
        answer = http.post(f"{GROUP}/threads/{tid}/cancel")
        assert answer.status_code == 200, answer.text
        thread = finish(http, tid, timeout=5)
        assert http.get(f"{GROUP}/threads/{tid}/result").status_code == 409
        events = logs(http, tid)
        time.sleep(0.5)
        assert len(logs(http, tid)) == len(events)  # nothing more once it ended
    assert thread.get("status") == "cancelled"
    assert int(thread.find("progress").get("current")) < 20_000
    assert events[-1][1].startswith("Status: cancelled")
