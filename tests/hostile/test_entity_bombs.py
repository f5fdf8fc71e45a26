"""Entity expansion bombs: billion laughs (nested entities, in text and in an attribute) and the
quadratic blowup (one large entity used many times), in start bodies and in the documents of
`validate` and `transform` (plain and zipped). None is ever expanded: a start body is a 400
(a DOCTYPE is refused), an uploaded document is a finding or an error naming libxml2's
amplification limit, the server's memory does not grow by the gigabytes an expansion would
take, and it keeps serving.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.hostile.payloads import (
    billion_laughs,
    check_error,
    finish,
    post_xml,
    quadratic_blowup,
    result_bytes,
    start_upload,
    still_serving,
    thread_logs,
    thread_total,
    zip_of,
)
from tests.support import Server

DATA = Path(__file__).resolve().parents[1] / "data"
BOOK_DTD = ("book.dtd", (DATA / "validate" / "book.dtd").read_bytes())
COPY_XSL = ("copy.xsl", (DATA / "transform" / "copy.xsl").read_bytes())
FINE = ("fine.xml", b'<book><title>T</title><chapter n="1">c</chapter></book>')
AMPLIFICATION = "Maximum entity amplification factor exceeded"
MIB = 1024


def peak_kib(server: Server) -> int:
    """The server process's peak resident memory (VmHWM)."""
    assert server.process is not None
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    found = re.search(r"VmHWM:\s+(\d+) kB", status)
    assert found, status
    return int(found.group(1))


def laughs_in_attribute(root: str = "doc") -> bytes:
    body = billion_laughs(root).decode()
    return body.replace(f"<{root}><title>&lol9;</title></{root}>",
                        f'<{root} a="&lol9;"><title/></{root}>').encode()


BOMBS: dict[str, Callable[[str], bytes]] = {
    "billion-laughs": billion_laughs,  # 10^9 × "lol" from about 800 bytes
    "billion-laughs-attribute": laughs_in_attribute,
    "quadratic": quadratic_blowup,  # 50 000 × 50 000 characters from 250 kB
    "quadratic-attribute": lambda root: quadratic_blowup(root).replace(
        b"<title>", b'<title a="' + b"&a;" * 20_000 + b'">'),
}


# -- start bodies -----------------------------------------------------------------------------
@pytest.mark.parametrize("bomb", sorted(BOMBS))
def test_a_bomb_in_a_start_body_is_400(server: Server, bomb: str) -> None:
    body = BOMBS[bomb]("job").replace(b"<job>", b'<job name="sleep">')
    before_threads, before_memory = thread_total(server), peak_kib(server)
    with server.client("contributor") as http:
        response = post_xml(http, body)
    root = check_error(response, 400, "0201")
    message = root.findtext("message")
    assert message == "Parameter 'body' may not have a DOCTYPE" or AMPLIFICATION in message, (
        message)
    assert len(response.content) < 2000  # the answer holds nothing expanded
    assert peak_kib(server) - before_memory < 100 * MIB
    assert thread_total(server) == before_threads
    still_serving(server)


def test_bombs_one_after_another_leave_the_server_serving(server: Server) -> None:
    before = peak_kib(server)
    with server.client("contributor") as http:
        for _ in range(20):
            for make in BOMBS.values():
                check_error(post_xml(http, make("job")), 400, "0201")
    assert peak_kib(server) - before < 100 * MIB
    still_serving(server)


# -- uploads ----------------------------------------------------------------------------------
def uploaded_bombs() -> list[tuple[str, bytes]]:
    return [(f"{name}.xml", make("book")) for name, make in sorted(BOMBS.items())]


@pytest.mark.parametrize("schema", ["dtd", "internal-dtd"])
@pytest.mark.parametrize("packing", ["files", "zip"])
def test_bombs_in_validated_documents_are_findings(
    server: Server, schema: str, packing: str
) -> None:
    """Against a DTD internal entities are used for validation, so this is where an expansion
    would happen: libxml2's amplification limit stops each bomb while parsing."""
    documents = [*uploaded_bombs(), FINE]
    uploads = ([("documents", ("set.zip", zip_of(documents)))] if packing == "zip"
               else [("documents", doc) for doc in documents])
    if schema == "dtd":
        uploads.append(("schema", BOOK_DTD))
    before = peak_kib(server)
    with server.client("contributor") as http:
        tid = start_upload(http, "validate", uploads)
        thread = finish(http, tid, timeout=60)
        report = result_bytes(http, tid)
    assert peak_kib(server) - before < 100 * MIB
    assert thread.get("status") == "failed"
    assert report is not None
    text = report.decode()
    for name in BOMBS:
        found = re.search(rf'<document path="{name}\.xml" status="invalid">(.*?)</document>', text)
        assert found and AMPLIFICATION in found.group(1), text[:3000]
    assert len(report) < 100_000  # findings, not expansions
    still_serving(server)


def test_bombs_in_transformed_documents_are_errors(server: Server) -> None:
    before = peak_kib(server)
    with server.client("contributor") as http:
        tid = start_upload(http, "transform",
                           [*(("documents", doc) for doc in [*uploaded_bombs(), FINE]),
                            ("stylesheet", COPY_XSL)])
        thread = finish(http, tid, timeout=60)
        events = thread_logs(http, tid)
        result = result_bytes(http, tid)
    assert peak_kib(server) - before < 100 * MIB
    assert thread.get("status") == "failed"
    errors = {text.split(":", 1)[0]: text for level, text in events if level == "ERROR"}
    assert set(errors) == {f"Document {name}.xml" for name in BOMBS}, errors
    for text in errors.values():
        assert "entit" in text, text
    assert result is not None and len(result) < 10_000  # the zip holds fine.xml only
    still_serving(server)
