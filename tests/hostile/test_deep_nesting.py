"""Deep nesting: XML 100 000 levels deep in start bodies and in the documents, schemas and
stylesheets of `validate` and `transform`; JSON as deep, which no start accepts. Nothing
recurses through it: a body is a 400 (docs/decisions.md: deeper than 256 is refused), an
upload is a finding or an error for that document (libxml2's own depth limit), and the
server keeps serving.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.hostile.payloads import (
    check_error,
    deep,
    finish,
    post_xml,
    result_bytes,
    start_upload,
    still_serving,
    thread_logs,
    thread_total,
)
from tests.support import Server
from threadsvc.xml.parse import MAX_DEPTH, MAX_JOB_BODY

DATA = Path(__file__).resolve().parents[1] / "data"
BOOK_XSD = ("book.xsd", (DATA / "validate" / "book.xsd").read_bytes())
COPY_XSL = ("copy.xsl", (DATA / "transform" / "copy.xsl").read_bytes())
FINE = ("fine.xml", (DATA / "validate" / "valid" / "moby.xml").read_bytes())
LEVELS = 100_000
DEPTH_LIMIT = "Excessive depth in document: 256, use XML_PARSE_HUGE option"


def job(inner: str) -> bytes:
    return f'<job name="sleep"><param name="seconds">0</param>{inner}</job>'.encode()


# -- start bodies -----------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["in-param", "in-job", "root"])
def test_a_deep_start_body_is_400(server: Server, where: str) -> None:
    nested = deep(LEVELS).decode()
    body = {
        "in-param": job(f'<param name="result">{nested}</param>'),
        "in-job": job(nested),
        "root": deep(LEVELS, tag="job"),
    }[where]
    before = thread_total(server)
    with server.client("contributor") as http:
        response = post_xml(http, body)
    if len(body) > MAX_JOB_BODY:  # refused by its size before it is parsed
        check_error(response, 413, "0206")
    else:
        message = check_error(response, 400, "0201").findtext("message")
        assert message.startswith("Parameter 'body' is not well-formed XML: " + DEPTH_LIMIT), message
    assert thread_total(server) == before
    still_serving(server)


def test_just_past_the_limit_is_refused_and_the_limit_itself_is_not(server: Server) -> None:
    """Depth counts from <job>: 256 levels in all are read (and judged: a <param> holding
    markup is a 400 naming it), 257 are refused (libxml2's limit comes first; threadsvc's own
    check of MAX_DEPTH stands behind it)."""
    with server.client("contributor") as http:
        allowed = post_xml(http, job(f'<param name="result">{deep(MAX_DEPTH - 2).decode()}'
                                     "</param>"))
        check_error(allowed, 400, "0201", "Parameter 'result' may hold only text")
        refused = post_xml(http, job(f'<param name="result">{deep(MAX_DEPTH - 1).decode()}'
                                     "</param>"))
        message = check_error(refused, 400, "0201").findtext("message")
        assert DEPTH_LIMIT in message or f"nested deeper than {MAX_DEPTH}" in message, message


def test_deep_namespaces_and_attributes(server: Server) -> None:
    """Each level declaring a namespace and an attribute: the same refusal, no slower path."""
    levels = "".join(f'<a xmlns:n{i}="urn:{i}" n{i}:x="{i}">' for i in range(20_000))
    body = job(levels + "</a>" * 20_000)
    with server.client("contributor") as http:
        message = check_error(post_xml(http, body), 400, "0201").findtext("message")
    assert DEPTH_LIMIT in message
    still_serving(server)


@pytest.mark.parametrize("prefix", ["/ps/service", "/ps/api"])
def test_deep_json_is_not_a_start_body(server: Server, prefix: str) -> None:
    """Starts take forms or XML only: JSON, however deep, is refused without being parsed."""
    body = b'{"job": "sleep", "x": ' + b"[" * LEVELS + b"]" * LEVELS + b"}"
    before = thread_total(server)
    with server.client("contributor") as http:
        response = http.post(f"{prefix}/groups/dev/threads", content=body,
                             headers={"Content-Type": "application/json"})
        check_error(response, 400, "0201", "must be form fields or a <job> XML document")
        nested_object = b'{"a":' * LEVELS + b"1" + b"}" * LEVELS
        response = http.post(f"{prefix}/groups/dev/threads", content=nested_object,
                             headers={"Content-Type": "application/json",
                                      "Accept": "application/json"})
        assert response.status_code == 400
        assert response.json()["error"]["id"] == "0201"
    assert thread_total(server) == before


def test_deep_text_in_a_form_field_is_only_text(server: Server) -> None:
    """Markup in a form value is text: it is stored as the result as it is, never parsed."""
    text = deep(10_000).decode()
    with server.client("contributor") as http:
        started = http.post("/ps/service/groups/dev/threads",
                            data={"job": "sleep", "seconds": "0", "result": text})
        assert started.status_code == 202, started.text
        tid = started.text.split('id="', 1)[1][:32]
        assert finish(http, tid).get("status") == "completed"
        assert result_bytes(http, tid) == text.encode()


# -- uploads ----------------------------------------------------------------------------------
@pytest.mark.parametrize("schema", ["xsd", "internal-dtd"])
def test_a_deep_document_is_a_finding(server: Server, schema: str) -> None:
    uploads = [("documents", ("deep.xml", deep(LEVELS, tag="book"))), ("documents", FINE)]
    if schema == "xsd":
        uploads.append(("schema", BOOK_XSD))
    with server.client("contributor") as http:
        tid = start_upload(http, "validate", uploads)
        thread = finish(http, tid)
        report = result_bytes(http, tid)
    assert thread.get("status") == "failed"
    assert report is not None
    text = report.decode()
    assert '<document path="deep.xml" status="invalid">' in text
    assert DEPTH_LIMIT in text, text
    assert f'<document path="fine.xml" status="{"valid" if schema == "xsd" else "invalid"}"' in text
    still_serving(server)


def test_a_deep_schema_fails_the_thread(server: Server) -> None:
    schema = ("deep.xsd", b'<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema">'
              + deep(LEVELS, tag="xs:annotation") + b"</xs:schema>")
    with server.client("contributor") as http:
        tid = start_upload(http, "validate", [("documents", FINE), ("schema", schema)])
        thread = finish(http, tid)
    assert thread.get("status") == "failed"
    assert thread.findtext("message").startswith("The schema deep.xsd is not well-formed XML: "
                                                 + DEPTH_LIMIT)
    still_serving(server)


def test_a_deep_document_to_transform_is_an_error(server: Server) -> None:
    with server.client("contributor") as http:
        tid = start_upload(http, "transform", [("documents", ("deep.xml", deep(LEVELS))),
                                               ("documents", FINE), ("stylesheet", COPY_XSL)])
        thread = finish(http, tid)
        events = thread_logs(http, tid)
    assert thread.get("status") == "failed"
    errors = [text for level, text in events if level == "ERROR"]
    assert len(errors) == 1 and errors[0].startswith("Document deep.xml"), errors
    assert "depth" in errors[0].lower(), errors
    still_serving(server)


def test_a_deep_stylesheet_fails_the_thread(server: Server) -> None:
    stylesheet = ("deep.xsl", (
        '<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">'
        f'<xsl:template match="/">{deep(LEVELS, tag="out").decode()}</xsl:template>'
        "</xsl:stylesheet>").encode())
    with server.client("contributor") as http:
        tid = start_upload(http, "transform", [("documents", FINE), ("stylesheet", stylesheet)])
        thread = finish(http, tid)
    assert thread.get("status") == "failed"
    message = thread.findtext("message")
    assert message.startswith("The stylesheet is not well-formed XML:"), message
    assert DEPTH_LIMIT in message, message
    still_serving(server)
