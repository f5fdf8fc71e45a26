"""The `transform` job end to end (multipart uploads to a real server, the zip of outputs
downloaded through the result URL), its attacks (tests/data/transform/attacks), cancel; and the
XSLT engine of threadsvc.xml.engine in this process for the limits a test can lower.

Attack files use placeholders the tests replace: `PORT` (a listener that counts connections:
none may ever arrive), `SECRET_URL` (a file holding a marker that must never come back),
`INCLUDED` and `TARGET` (files that must never be read or written).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import threading
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
from threadsvc.xml.engine import MAX_OUTPUT, Engine, output_path
from threadsvc.xml.schemas import validate as validate_published
from threadsvc.xml.stylesheet import StylesheetError
from threadsvc.xml.transform import Transformer

DATA = Path(__file__).parent / "data" / "transform"
ATTACKS = DATA / "attacks"
DOCS = DATA / "docs"
GROUP = "/ps/service/groups/dev"
PASSWD_LINE = re.compile(r"\w+:[x*!]?:\d+:\d+:")
MARKER = "SECRET-MARKER-7f3a"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    for running, _ in running_server(tmp_path_factory.mktemp("transform"), **{"max-running": 8}):
        yield running


@pytest.fixture
def listener() -> Iterator[Listener]:
    """Counts connections (and would answer some XML)."""
    with Listener(f"<leak>{MARKER}</leak>".encode()) as item:
        yield item


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "secret.xml"
    path.write_text(f"<secret>{MARKER}</secret>")
    return path


# -- helpers ------------------------------------------------------------------------------------
def doc_set() -> list[Upload]:
    """The documents of tests/data/transform/docs, at their paths below it."""
    return [(p.relative_to(DOCS).as_posix(), p.read_bytes()) for p in sorted(DOCS.rglob("*.xml"))]


def post(http: httpx.Client, documents: list[Upload], stylesheet: Upload,
         fields: dict[str, str] | None = None) -> httpx.Response:
    files = [("documents", (name, data, "application/xml")) for name, data in documents]
    files.append(("stylesheet", (stylesheet[0], stylesheet[1], "application/xslt+xml")))
    return http.post(f"{GROUP}/threads", data={"job": "transform", **(fields or {})}, files=files)


def start(http: httpx.Client, documents: list[Upload], stylesheet: Upload,
          fields: dict[str, str] | None = None) -> str:
    response = post(http, documents, stylesheet, fields)
    assert response.status_code == 202, response.text
    return thread_id(response)


def finish(http: httpx.Client, tid: str, timeout: float = 60) -> Any:
    """The thread once final, checked against thread.xsd."""
    response = wait_final(http, tid, timeout=timeout)
    validate_published(response.content)
    return etree.fromstring(response.content)


def outputs(http: httpx.Client, tid: str) -> dict[str, bytes]:
    """The result zip, through the result URL and its pre-signed link: path → bytes."""
    answer = http.get(f"{GROUP}/threads/{tid}/result")
    assert answer.status_code == 302, answer.text
    response = httpx.get(answer.headers["location"])  # the pre-signed link needs no credentials
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/zip")
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert archive.testzip() is None
        return {info.filename: archive.read(info) for info in archive.infolist()}


def logs(http: httpx.Client, tid: str) -> list[tuple[str, str]]:
    response = http.get(f"{GROUP}/threads/{tid}/logs", params={"limit": 10000})
    assert response.status_code == 200, response.text
    return [(e.get("level"), e.text or "") for e in etree.fromstring(response.content)]


def errors(events: list[tuple[str, str]]) -> list[str]:
    return [text for level, text in events if level == "ERROR"]


def message(thread: Any) -> str:
    return str(thread.findtext("message") or "")


def assert_no_leak(*texts: str | bytes) -> None:
    for item in texts:
        text = item.decode("utf-8", "replace") if isinstance(item, bytes) else item
        assert not PASSWD_LINE.search(text), text[:500]
        assert MARKER not in text, text[:500]


def run(server: Server, documents: list[Upload], stylesheet: Upload,
        fields: dict[str, str] | None = None, timeout: float = 60,
        ) -> tuple[Any, list[tuple[str, str]], str]:
    with server.client("contributor") as http:
        tid = start(http, documents, stylesheet, fields)
        thread = finish(http, tid, timeout)
        return thread, logs(http, tid), tid


# -- what it makes ------------------------------------------------------------------------------
def test_a_zip_of_documents_in_folders(server: Server) -> None:
    documents = doc_set()
    assert {name for name, _ in documents} == {"a.xml", "sub/b.xml", "sub/deeper/c.xml"}
    with server.client("contributor") as http:
        tid = start(http, [zipped(documents)], file(DATA / "copy.xsl"))
        thread = finish(http, tid)
        assert thread.get("status") == "completed", message(thread)
        assert thread.get("type") == "transform"
        assert message(thread) == "Transformed 3 of 3 documents"
        progress = thread.find("progress")
        assert (progress.get("current"), progress.get("total")) == ("3", "3")
        # the task resource sends the caller on to the result once completed
        assert http.get(f"{GROUP}/threads/{tid}").status_code == 303
        result = outputs(http, tid)
        events = logs(http, tid)
    assert sorted(result) == ["a.xml", "sub/b.xml", "sub/deeper/c.xml"]
    for name, data in documents:
        copy = etree.fromstring(result[name])
        assert copy.tag == "copy" and copy.get("who") == "nobody" and copy.get("note") == "none"
        (original,) = copy
        source = etree.fromstring(data)
        assert etree.tostring(original) == etree.tostring(source)
    assert "Bravo — ü" in result["sub/b.xml"].decode("utf-8")
    texts = [text for _, text in events]
    for name in ("a.xml", "sub/b.xml", "sub/deeper/c.xml"):
        assert f"Document {name} transformed to {name}." in texts
    assert not errors(events)


def test_plain_files_and_zips_together(server: Server) -> None:
    plain = file(DOCS / "a.xml", "loose.xml")
    thread, _, tid = run(server, [plain, zipped(doc_set()[1:], "more.zip")],
                         file(DATA / "to-text.xsl"))
    assert thread.get("status") == "completed", message(thread)
    with server.client("contributor") as http:
        result = outputs(http, tid)
    assert sorted(result) == ["loose.txt", "sub/b.txt", "sub/deeper/c.txt"]


def test_stylesheet_parameters_reach_the_stylesheet(server: Server) -> None:
    tricky = "it's \"quoted\" & <odd>"
    fields = {"param.who": "ada", "param.note.text": tricky, "param.unused": "x"}
    thread, _, tid = run(server, [file(DOCS / "a.xml")], file(DATA / "copy.xsl"), fields)
    assert thread.get("status") == "completed", message(thread)
    with server.client("contributor") as http:
        result = outputs(http, tid)
    copy = etree.fromstring(result["a.xml"])
    assert copy.get("who") == "ada"
    assert copy.get("note") == tricky


def test_text_and_html_output_methods(server: Server) -> None:
    documents = [zipped(doc_set())]
    text, _, text_id = run(server, documents, file(DATA / "to-text.xsl"))
    html, _, html_id = run(server, documents, file(DATA / "to-html.xsl"))
    assert text.get("status") == html.get("status") == "completed"
    with server.client("contributor") as http:
        texts = outputs(http, text_id)
        pages = outputs(http, html_id)
    assert texts == {
        "a.txt": b"a: Alpha (1 paragraphs)\n",
        "sub/b.txt": "b: Bravo — ü (2 paragraphs)\n".encode(),
        "sub/deeper/c.txt": b"c: Charlie (1 paragraphs)\n",
    }
    assert sorted(pages) == ["a.html", "sub/b.html", "sub/deeper/c.html"]
    page = pages["sub/b.html"].decode("utf-8")
    assert page.startswith("<html>") and "<h1>Bravo — ü</h1>" in page
    assert "<?xml" not in page  # serialised as HTML, not XML
    assert "<p>It has two paragraphs.</p>" in page


def test_a_malformed_document_among_valid_ones(server: Server) -> None:
    documents = doc_set()
    documents.insert(1, ("broken/malformed.xml", (DATA / "malformed.xml").read_bytes()))
    thread, events, tid = run(server, [zipped(documents)], file(DATA / "copy.xsl"))
    assert thread.get("status") == "failed"  # it reported an error (docs/api.md#statuses)
    assert thread.get("errors") == "1"
    assert message(thread) == "Transformed 3 of 4 documents"
    (error,) = errors(events)
    assert error.startswith("Document broken/malformed.xml: The document is not well-formed XML")
    assert error.endswith("para line 4 and doc, line 5, column 7")
    with server.client("contributor") as http:
        result = outputs(http, tid)  # a failed thread still carries its zip
    assert sorted(result) == ["a.xml", "sub/b.xml", "sub/deeper/c.xml"]


# -- the stylesheet may not reach outside -------------------------------------------------------
def test_document_of_a_local_file_is_denied(server: Server, secret: Path) -> None:
    for url in (secret.as_uri(), str(secret), "file:///etc/passwd"):
        thread, events, tid = run(server, [file(DOCS / "a.xml")],
                                  file(ATTACKS / "read-file.xsl", SECRET_URL=url))
        assert thread.get("status") == "failed", url
        (error,) = errors(events)
        assert error.startswith("Document a.xml: The stylesheet failed:"), error
        assert "refused" in error or "denied" in error, error
        with server.client("contributor") as http:
            result = outputs(http, tid)
        assert result == {}
        assert_no_leak(*[text for _, text in events], message(thread))
    assert_no_leak((server.directory / "server.log").read_text())


def test_document_over_http_is_denied(server: Server, listener: Listener) -> None:
    thread, events, _ = run(server, [file(DOCS / "a.xml")],
                            file(ATTACKS / "read-http.xsl", PORT=str(listener.port)))
    assert thread.get("status") == "failed"
    (error,) = errors(events)
    assert f"http://127.0.0.1:{listener.port}/secret.xml" in error
    assert "refused" in error or "denied" in error, error
    assert listener.connections == 0
    assert_no_leak(*[text for _, text in events])


def test_include_and_import_are_refused_at_compile_time(
    server: Server, listener: Listener, tmp_path: Path
) -> None:
    included = tmp_path / "included.xsl"
    included.write_text(
        '<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">'
        f'<xsl:template match="/"><leak>{MARKER}</leak></xsl:template></xsl:stylesheet>'
    )
    atime = included.stat().st_atime_ns
    for stylesheet, href in (
        (file(ATTACKS / "include-file.xsl", INCLUDED=included.as_uri()), included.as_uri()),
        (file(ATTACKS / "include-file.xsl", INCLUDED=str(included)), str(included)),
        (file(ATTACKS / "import-http.xsl", PORT=str(listener.port)),
         f"http://127.0.0.1:{listener.port}/evil.xsl"),
    ):
        thread, events, tid = run(server, [file(DOCS / "a.xml")], stylesheet)
        assert thread.get("status") == "failed"
        kind = "import" if "import" in stylesheet[0] else "include"
        assert message(thread) == (
            f"The stylesheet may not use xsl:{kind} (href '{href}', line 4): "
            "it must be self-contained"
        )
        with server.client("contributor") as http:
            assert http.get(f"{GROUP}/threads/{tid}/result").status_code == 409  # no result
        assert_no_leak(*[text for _, text in events])
    assert listener.connections == 0
    assert included.stat().st_atime_ns == atime


def test_extension_elements_are_refused_and_nothing_is_written(
    server: Server, tmp_path: Path
) -> None:
    target = tmp_path / "written.txt"
    thread, _, _ = run(server, [file(DOCS / "a.xml")],
                       file(ATTACKS / "exsl-document.xsl", TARGET=str(target)))
    assert thread.get("status") == "failed"
    assert message(thread) == (
        "The stylesheet declares extension elements (exsl, line 4); "
        "extension elements are not allowed"
    )
    # xsl:document (XSLT 1.1) needs no declaration: the access control denies the write
    thread, events, _ = run(server, [file(DOCS / "a.xml")],
                            file(ATTACKS / "xsl-document.xsl", TARGET=str(target)))
    assert thread.get("status") == "failed"
    (error,) = errors(events)
    assert "write" in error and str(target) in error and "refused" in error, error
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_extension_functions_are_refused(server: Server) -> None:
    for name, function in (("extension-function.xsl", "sys:exec"),
                           ("exslt-function.xsl", "str:padding")):
        thread, _, _ = run(server, [file(DOCS / "a.xml")], file(ATTACKS / name))
        assert thread.get("status") == "failed"
        assert message(thread).startswith(f"The stylesheet calls the extension function "
                                          f"{function}() (line ")
        assert message(thread).endswith("extension functions are not allowed")


def test_endless_recursion_fails_the_document_not_the_server(server: Server) -> None:
    started = time.monotonic()
    thread, events, _ = run(server, [zipped(doc_set())], file(ATTACKS / "recursion.xsl"))
    assert time.monotonic() - started < 30
    assert thread.get("status") == "failed"
    assert thread.get("errors") == "3"
    assert all("infinite template recursion" in text for text in errors(events)), events
    with server.client("contributor") as http:
        assert http.get("/health").status_code == 200


def test_an_output_above_the_cap_is_refused(server: Server) -> None:
    documents = [("big.xml", b'<doc times="23"/>'), ("small.xml", b'<doc times="2"/>')]
    thread, events, tid = run(server, documents, file(ATTACKS / "big-output.xsl"))
    assert thread.get("status") == "failed"
    (error,) = errors(events)
    assert error == (f"Document big.xml: The output is larger than {MAX_OUTPUT} bytes, "
                     "the limit for one document")
    with server.client("contributor") as http:
        assert outputs(http, tid) == {"small.txt": b"0123456789abcdef" * 4}


# -- uploads ------------------------------------------------------------------------------------
def test_entities_are_never_expanded(server: Server, listener: Listener) -> None:
    port = str(listener.port)
    documents = [
        file(ATTACKS / "xxe-file.xml"),
        file(ATTACKS / "xxe-http.xml", PORT=port),
        file(ATTACKS / "xxe-parameter.xml", PORT=port),
        file(ATTACKS / "laughs.xml"),
        file(DOCS / "a.xml"),
    ]
    started = time.monotonic()
    thread, events, tid = run(server, documents, file(DATA / "copy.xsl"))
    assert time.monotonic() - started < 30
    assert thread.get("status") == "failed"
    found = {text.split(":", 1)[0]: text for text in errors(events)}
    assert set(found) == {f"Document {name}" for name in
                          ("xxe-file.xml", "xxe-http.xml", "xxe-parameter.xml", "laughs.xml")}
    for text in found.values():
        assert "entit" in text, text
    assert "declares entities (secret); entities are never expanded" in found[
        "Document xxe-file.xml"]
    # libxml2 stops the bomb while parsing, even though it would not expand it anyway
    assert "entity amplification" in found["Document laughs.xml"]
    assert listener.connections == 0
    with server.client("contributor") as http:
        result = outputs(http, tid)
    assert sorted(result) == ["a.xml"]
    assert_no_leak(*[text for _, text in events], *result.values())


def test_zip_slip_fails_the_thread(server: Server) -> None:
    evil = zipped([("ok.xml", b"<doc/>"), ("../../escape.xml", b"<doc/>")], "evil.zip")
    thread, _, tid = run(server, [evil], file(DATA / "copy.xsl"))
    assert thread.get("status") == "failed"
    assert message(thread) == "The path '../../escape.xml' leaves the document set"
    with server.client("contributor") as http:
        assert http.get(f"{GROUP}/threads/{tid}/result").status_code == 409
    assert not (server.directory / "escape.xml").exists()


def test_no_documents_fails_the_thread(server: Server) -> None:
    only_folders = zipped([("folder/", b""), ("folder/sub/", b"")], "folders.zip")
    for documents in ([zipped([], "empty.zip")], [only_folders]):
        thread, _, tid = run(server, documents, file(DATA / "copy.xsl"))
        assert thread.get("status") == "failed"
        assert message(thread) == "No documents to transform: the uploads hold no files"
        with server.client("contributor") as http:
            assert http.get(f"{GROUP}/threads/{tid}/result").status_code == 409


def test_a_stylesheet_that_is_not_one(server: Server) -> None:
    thread, _, _ = run(server, [file(DOCS / "a.xml")], ("style.xsl", b"<doc/>"))
    assert thread.get("status") == "failed"
    assert message(thread).startswith("The stylesheet does not compile:")
    thread, _, _ = run(server, [file(DOCS / "a.xml")], ("style.xsl", b"<xsl:stylesheet"))
    assert message(thread).startswith("The stylesheet is not well-formed XML:")


def test_bad_parameters_are_400(server: Server) -> None:
    a, sheet = file(DOCS / "a.xml"), file(DATA / "copy.xsl")
    with server.client("contributor") as http:
        cases: list[tuple[httpx.Response, str]] = [
            (post(http, [a], sheet, {"param.": "x"}), "'param.'"),
            (post(http, [a], sheet, {"param.1x": "x"}), "'param.1x'"),
            (post(http, [a], sheet, {"param.a:b": "x"}), "'param.a:b'"),
            (post(http, [a], sheet, {"param.x": "\x01"}), "'param.x' holds characters"),
            (post(http, [a], sheet, {"param.profile_run": "1"}),
             "'param.profile_run' is reserved"),
            (post(http, [a], sheet, {"param.x": "y" * 10_001}), "'param.x' is longer"),
            (post(http, [a], sheet, {"other": "x"}), "'other' is not a parameter"),
            (http.post(f"{GROUP}/threads", data={"job": "transform"},
                       files=[("documents", a)]), "'stylesheet' is required"),
            (http.post(f"{GROUP}/threads", data={"job": "transform"},
                       files=[("stylesheet", sheet)]), "'documents' is required"),
            (http.post(f"{GROUP}/threads", data={"job": "transform", "param.x": "1"},
                       files=[("documents", a), ("stylesheet", sheet),
                              ("param.x", ("x.txt", b"2"))]), "'param.x'"),
            (http.post(f"{GROUP}/threads", data={"job": "transform"},
                       files=[("documents", a), ("stylesheet", sheet), ("stylesheet", sheet)]),
             "'stylesheet' is given more than once"),
        ]
        many = {f"param.p{i}": str(i) for i in range(101)}
        cases.append((post(http, [a], sheet, many), "one stylesheet parameter too many"))
        reviewer = server.client("reviewer")
        with reviewer:
            forbidden = post(reviewer, [a], sheet)
    for response, text in cases:
        assert response.status_code == 400, response.text
        assert 'id="0201"' in response.text and text in response.text, response.text
    assert forbidden.status_code == 403


# -- cancel -------------------------------------------------------------------------------------
def _children(server: Server) -> list[int]:
    """Transform processes the server has started and that still run."""
    assert server.process is not None
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == server.process.pid and b"threadsvc.xml.transform" in cmdline:
            found.append(int(entry.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_cancel_a_large_set_while_it_runs(server: Server) -> None:
    documents = [(f"part-{i:03d}/doc.xml", b'<doc depth="17"/>') for i in range(400)]
    with server.client("contributor") as http:
        tid = start(http, [zipped(documents)], file(DATA / "slow.xsl"))
        wait_for(http, f"{GROUP}/threads/{tid}/progress",
                 lambda r: re.search(r'<progress current="[3-9]', r.text) is not None, 30)
        assert _children(server)
        answer = http.post(f"{GROUP}/threads/{tid}/cancel")
        assert answer.status_code == 200, answer.text
        thread = finish(http, tid, timeout=5)
        events = logs(http, tid)
        time.sleep(0.5)
        assert len(logs(http, tid)) == len(events)  # nothing more once it ended
        assert http.get(f"{GROUP}/threads/{tid}/result").status_code == 409
    assert thread.get("status") == "cancelled"
    assert int(thread.find("progress").get("current")) < 400
    assert events[-1][1].startswith("Status: cancelled")
    wait_for_gone(server)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_cancel_in_the_middle_of_an_endless_document(server: Server) -> None:
    # 2^60 template calls: libxslt never returns by itself, and cannot be interrupted
    with server.client("contributor") as http:
        tid = start(http, [("forever.xml", b'<doc depth="60"/>')], file(DATA / "slow.xsl"))
        wait_for(http, f"{GROUP}/threads/{tid}/progress",
                 lambda r: 'status="inprogress"' in r.text and bool(_children(server)), 30)
        time.sleep(0.5)
        started = time.monotonic()
        assert http.post(f"{GROUP}/threads/{tid}/cancel").status_code == 200
        thread = finish(http, tid, timeout=5)
        assert time.monotonic() - started < 2
    assert thread.get("status") == "cancelled"
    wait_for_gone(server)


def wait_for_gone(server: Server, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while _children(server):
        assert time.monotonic() < deadline, "a transform process outlived its thread"
        time.sleep(0.05)


# -- the engine, in this process, with limits lowered -------------------------------------------
def test_output_path() -> None:
    assert output_path("a.xml", ".html") == "a.html"
    assert output_path("sub/b.dita", ".xml") == "sub/b.xml"
    assert output_path("sub/v1.2/readme", ".txt") == "sub/v1.2/readme.txt"
    assert output_path("sub/.hidden", ".xml") == "sub/.hidden.xml"


def test_the_access_control_under_the_extension_check(tmp_path: Path, secret: Path) -> None:
    """Even with the compile-time refusal of extensions off, exsl:document writes nothing and
    document() reads nothing: the XSLTAccessControl denies both."""
    target = tmp_path / "written.txt"
    engine = Engine(file(ATTACKS / "exsl-document.xsl", TARGET=str(target))[1],
                    refuse_extensions=False)
    outcome = engine.run(b"<doc/>")
    assert outcome.output is None and outcome.error is not None
    assert "File write for" in outcome.error and "refused" in outcome.error
    assert not target.exists()
    reader = Engine(file(ATTACKS / "read-file.xsl", SECRET_URL=secret.as_uri())[1])
    outcome = reader.run(b"<doc/>")
    assert outcome.output is None and "Local file read for" in str(outcome.error)
    assert_no_leak(str(outcome.error))


def test_what_looks_like_a_call_but_is_not() -> None:
    stylesheet = b"""<xsl:stylesheet version="1.0"
        xmlns:xsl="http://www.w3.org/1999/XSL/Transform">
      <xsl:template match="/">
        <r href="mailto:x(y)" a="{concat('p:f(', 'x')}" b="{{p:g()}}">
          <xsl:value-of select="count(child::node())"/>
          <xsl:value-of select="'q:h()'"/>
        </r>
      </xsl:template>
    </xsl:stylesheet>"""
    outcome = Engine(stylesheet).run(b"<doc/>")
    assert outcome.error is None
    root = etree.fromstring(outcome.output or b"")
    assert root.attrib == {"href": "mailto:x(y)", "a": "p:f(x", "b": "{p:g()}"}
    assert root.text == "1q:h()"


def test_a_small_cap_and_xsl_message() -> None:
    stylesheet = b"""<xsl:stylesheet version="1.0"
        xmlns:xsl="http://www.w3.org/1999/XSL/Transform">
      <xsl:output method="text"/>
      <xsl:template match="/">
        <xsl:message>looking at <xsl:value-of select="name(*)"/></xsl:message>
        <xsl:value-of select="/*"/>
      </xsl:template>
    </xsl:stylesheet>"""
    engine = Engine(stylesheet, max_output=10)
    small = engine.run(b"<doc>0123456789</doc>")
    assert small.output == b"0123456789" and small.extension == ".txt"
    assert small.messages == ("looking at doc",)
    big = engine.run(b"<doc>0123456789x</doc>")
    assert big.output is None
    assert big.error == "The output is larger than 10 bytes, the limit for one document"


def test_html_by_default_for_an_html_root() -> None:
    stylesheet = b"""<xsl:stylesheet version="1.0"
        xmlns:xsl="http://www.w3.org/1999/XSL/Transform">
      <xsl:template match="/"><HTML><body><br/></body></HTML></xsl:template>
    </xsl:stylesheet>"""
    outcome = Engine(stylesheet).run(b"<doc/>")
    assert outcome.extension == ".html" and outcome.output == b"<HTML><body><br></body></HTML>\n"


def test_a_document_that_takes_too_long_is_stopped_and_the_next_goes_on() -> None:
    slow = (DATA / "slow.xsl").read_bytes()
    with Transformer(slow, timeout=1.0) as transformer:
        first = transformer.pid
        started = time.monotonic()
        stuck = transformer.transform(b'<doc depth="60"/>')
        assert time.monotonic() - started < 3
        assert stuck.output is None
        assert stuck.error == "The transformation took longer than 1 s, the limit"
        quick = transformer.transform(b'<doc depth="3"/>')
        assert quick.output == b"done" and transformer.pid != first
    assert first is not None and not _alive(first)


def test_a_document_that_runs_out_of_memory_is_stopped_and_the_next_goes_on() -> None:
    big = (ATTACKS / "big-output.xsl").read_bytes()
    with Transformer(big, memory=400 * 1024 * 1024) as transformer:
        huge = transformer.transform(b'<doc times="26"/>')  # 1 GiB of text
        assert huge.output is None and huge.error
        small = transformer.transform(b'<doc times="1"/>')
        assert small.output == b"0123456789abcdef" * 2


def test_cancel_kills_the_process() -> None:
    cancel = threading.Event()

    class Cancelled(Exception):
        pass

    def check() -> None:
        if cancel.is_set():
            raise Cancelled

    slow = (DATA / "slow.xsl").read_bytes()
    transformer = Transformer(slow, check=check)
    transformer.start()
    pid = transformer.pid
    threading.Timer(0.3, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(Cancelled):
        transformer.transform(b'<doc depth="60"/>')
    assert time.monotonic() - started < 1.5
    assert pid is not None and not _alive(pid) and transformer.pid is None


def test_a_refused_stylesheet_leaves_no_process() -> None:
    with pytest.raises(StylesheetError, match="extension function sys:exec"):
        Transformer((ATTACKS / "extension-function.xsl").read_bytes()).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie of ours would still answer; it is reaped by Popen.wait in close()
    return True


# -- the extension check against libxml2's own reading of expressions ---------------------------
def test_the_check_sees_every_call_libxml2_makes() -> None:
    """Random expressions (calls under odd prefixes, operator names glued to names, random
    whitespace and stray characters) compiled by libxml2 with a stand-in for every extension
    function: whenever libxml2 calls one, threadsvc.xml.stylesheet.function_calls reports a
    call that the check refuses."""
    import random

    from threadsvc.xml.stylesheet import FUNCTIONS, function_calls

    prefixes = ["é", "中", "_x", "a.b", "e\u0301", "xmlfoo", "p", "and", "div", "child", "text"]
    locals_ = ["evaluate", "f", "and", "div", "or", "mod", "text", "node", "count", "x-y"]
    space = {p: f"urn:{i}" for i, p in enumerate(prefixes)}
    called: list[str] = []

    def stand_in(name: str) -> Any:
        return lambda context, *args: called.append(name) or "1"

    extensions: dict[tuple[str | None, str], Any] = {
        (space[p], name): stand_in(f"{p}:{name}") for p in prefixes for name in locals_}
    extensions.update({(None, name): stand_in(name) for name in ("f", "y", "andf", "evaluate")})
    names = [f"{p}:{n}" for p in prefixes for n in locals_] + ["f", "y", "andf", "concat"]
    rng = random.Random(20261202)

    def ws() -> str:
        return rng.choice(["", "", " ", "\t", "\n"])

    def operand(depth: int) -> str:
        kind = rng.randrange(8 if depth < 3 else 2)
        if kind == 0:
            return rng.choice(["'s'", '"t"', "1", ".5", "$v", ".", ".."])
        if kind == 1:
            return rng.choice(["a", "p:a", "*", "@b", "child::a", "text()", "and", "div", "//a"])
        if kind == 2:
            return "//a[" + expression(depth + 1) + "]"
        if kind in (3, 4, 5):
            arguments = ",".join(ws() + expression(depth + 1) for _ in range(rng.randint(0, 2)))
            return rng.choice(names) + ws() + "(" + arguments + ")"
        return "(" + expression(depth + 1) + ")"

    def expression(depth: int = 0) -> str:
        text = operand(depth)
        for _ in range(rng.randint(0, 2)):
            text += ws() + rng.choice(["and", "or", "div", "mod", "*", "|", "+", "-", "="]) + \
                ws() + operand(depth)
        return text

    document = etree.fromstring("<r><a b='1'>x</a><a>y</a></r>")
    calling = 0
    for _ in range(20000):
        text = expression()
        if rng.random() < 0.3:  # a stray character somewhere
            at = rng.randrange(len(text) + 1)
            text = text[:at] + rng.choice([" ", ":", "(", ")", "é", "-", "."]) + text[at:]
        try:
            compiled = etree.XPath(text, namespaces=space, extensions=extensions)
        except etree.XPathError:
            continue
        called.clear()
        with contextlib.suppress(etree.XPathError):
            compiled(document, v="1")
        if not called:
            continue
        calling += 1
        try:
            seen = list(function_calls(text))
        except ValueError:
            continue  # refused: a stray ':'
        assert any(name not in FUNCTIONS for name in seen), (text, called, seen)
    print(f"{calling} of 20000 random expressions call an extension")
    assert calling > 1000, calling  # the random expressions do call extensions


@pytest.mark.parametrize(("expression", "calls"), [
    ("count(//a) + 1", ["count"]),
    ("1 and(2)", []),  # `and` after an operand is the operator
    ("a div(2)", []),
    ("div(2)", ["div"]),  # at the start it can only be a name
    ("text() | node() | comment() | processing-instruction('x')", []),
    ("child::and[. = 1]", []),
    ("$p:v * p:*", []),
    ("'é:evaluate(1)' and \"x:y()\"", []),
    ("é:evaluate ('1')", ["é:evaluate"]),
    ("e\u0301:date()", ["e\u0301:date"]),
    ("1 andé:evaluate('1')", ["andé:evaluate"]),  # libxml2: `and é:evaluate(...)`
    ("𝒳:f()", ["𝒳:f"]),
])
def test_function_calls(expression: str, calls: list[str]) -> None:
    from threadsvc.xml.stylesheet import function_calls

    assert list(function_calls(expression)) == calls


@pytest.mark.parametrize("expression", ["a :b()", "*:f()", "a: b()", ":f()"])
def test_a_colon_outside_a_name_is_refused(expression: str) -> None:
    from threadsvc.xml.stylesheet import function_calls

    with pytest.raises(ValueError, match="':' outside a prefixed name"):
        list(function_calls(expression))
