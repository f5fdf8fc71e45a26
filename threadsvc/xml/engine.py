"""XSLT 1.0 with an untrusted stylesheet over untrusted documents: `Engine` compiles the
stylesheet once and applies it to each document, in the process that calls it (the child
process of threadsvc.xml.transform runs it there).

What a stylesheet may do:

- It is parsed by a hardened parser: no DTD loading, no entities, no network, no huge trees,
  and a resolver that refuses every URL, so nothing is read while it compiles.
- Before it compiles, `threadsvc.xml.stylesheet.check` refuses includes and imports, extension
  elements and every call of a function that is not XPath's or XSLT's (EXSLT, libxslt's own,
  anything else, under any prefix): no extension function is registered here, and the EXSLT
  ones that libxslt builds in can therefore never be called.
- At run time, `XSLTAccessControl` denies reading and writing files and the network:
  `document()` of a file or a URL, and `xsl:document` (XSLT 1.1) writing one, fail the
  document with libxslt's message, which names the URL and never holds its content.
- libxslt stops recursion deeper than its limit (3000) with an error for that document.
- A document's output above `MAX_OUTPUT` bytes is refused for that document.

Documents go through the same kind of parser. One that declares entities (XXE, "billion
laughs") or refers to one is refused, never expanded; a malformed one is refused with the
parser's message. Either way that document fails and the others go on.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from lxml import etree

from threadsvc.xml.parse import LoadPolicy, hardened_parser
from threadsvc.xml.stylesheet import XSL, StylesheetError
from threadsvc.xml.stylesheet import check as check_stylesheet

MAX_OUTPUT = 64 * 1024 * 1024  # bytes of one document's output
MAX_MESSAGES = 20  # xsl:message texts kept per document
MAX_TEXT = 2_000  # characters of one message or error

RESERVED_PARAM = "profile_run"  # lxml's own keyword: no stylesheet parameter can have the name


class Refused(Exception):
    """Raised by the resolver: nothing may be loaded."""


def _deny_all(system_url: str | None, public_id: str | None) -> Exception:
    return Refused(f"Loading {str(system_url)[:300]} is refused")


@dataclass(frozen=True)
class Outcome:
    """One document's transformation: its output, or why there is none."""

    output: bytes | None
    extension: str = ".xml"  # from xsl:output: .html, .txt or .xml
    error: str | None = None
    messages: tuple[str, ...] = field(default=())  # xsl:message texts and libxslt warnings


def output_path(path: str, extension: str) -> str:
    """The path of a document's output: its own, with `extension` for its extension."""
    directory, name = posixpath.split(path)
    stem, old = posixpath.splitext(name)
    return posixpath.join(directory, (stem if old else name) + extension)


def _access_control() -> etree.XSLTAccessControl:
    return etree.XSLTAccessControl(
        read_file=False, write_file=False, create_dir=False,
        read_network=False, write_network=False,
    )


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def _parse(data: bytes, what: str) -> etree._ElementTree:
    """Parse `data` (a document or the stylesheet) with the hardened parser; entities in any
    form are refused. Raises ValueError saying why."""
    try:
        root = etree.fromstring(data, hardened_parser(LoadPolicy(_deny_all)))
    except etree.XMLSyntaxError as exc:
        raise ValueError(f"{what} is not well-formed XML: {_clip(str(exc.msg))}") from None
    except Refused as exc:
        raise ValueError(f"{what}: {exc}") from None
    tree = root.getroottree()
    dtd = tree.docinfo.internalDTD
    declared = [entity.name for entity in dtd.iterentities()] if dtd is not None else []
    if declared:
        names = ", ".join(str(name) for name in declared[:5])
        raise ValueError(f"{what} declares entities ({names}); entities are never expanded")
    for reference in root.iter(etree.Entity):
        raise ValueError(
            f"{what} refers to the entity {reference.text} (line {reference.sourceline}); "
            "entities are never expanded"
        )
    return tree


def _log_texts(entries: Iterable[Any]) -> list[str]:
    """Distinct texts of libxslt's log, each with the stylesheet line when known."""
    texts: list[str] = []
    for entry in entries:
        text = _clip(str(entry.message or ""))
        if not text or text == "unknown error":
            continue
        if entry.filename == "<xslt>" and entry.line:
            text = f"{text} (stylesheet line {entry.line})"
        if text not in texts:
            texts.append(text)
    return texts


class Engine:
    """A stylesheet compiled once, applied in this process (the child runs it)."""

    def __init__(
        self,
        stylesheet: bytes,
        params: Mapping[str, str] | None = None,
        *,
        max_output: int = MAX_OUTPUT,
        refuse_extensions: bool = True,  # False only to test the access control under it
    ) -> None:
        try:
            tree = _parse(stylesheet, "The stylesheet")
        except ValueError as exc:
            raise StylesheetError(str(exc)) from None
        if refuse_extensions:
            check_stylesheet(tree)
        try:
            self.xslt = etree.XSLT(tree, regexp=False, access_control=_access_control())
        except Refused as exc:
            raise StylesheetError(f"The stylesheet does not compile: {exc}") from None
        except etree.XSLTParseError as exc:
            details = "; ".join(_log_texts(exc.error_log)) or _clip(str(exc))
            raise StylesheetError(f"The stylesheet does not compile: {details}") from None
        self.method = self._method(tree)
        given = dict(params or {})
        if RESERVED_PARAM in given:
            raise StylesheetError(f"A stylesheet parameter cannot be named {RESERVED_PARAM}")
        self.params = {name: etree.XSLT.strparam(value) for name, value in given.items()}
        self.max_output = max_output

    @staticmethod
    def _method(tree: etree._ElementTree) -> str | None:
        method = None
        for output in tree.getroot().iterchildren(f"{{{XSL}}}output"):
            method = output.get("method", method)
        return None if method is None else str(method).strip()

    def extension(self, result: etree._XSLTResultTree) -> str:
        method = self.method
        if method is None:  # XSLT 1.0 §16: html when the result's root is an <html>
            root = result.getroot()
            html = root is not None and isinstance(root.tag, str) and root.tag.lower() == "html"
            method = "html" if html else "xml"
        return {"html": ".html", "xhtml": ".html", "text": ".txt"}.get(method, ".xml")

    def run(self, data: bytes) -> Outcome:
        try:
            document = _parse(data, "The document")
        except ValueError as exc:
            return Outcome(None, error=str(exc))
        try:
            result = self.xslt(document, profile_run=False, **self.params)
        except etree.XSLTApplyError as exc:
            texts = _log_texts(self.xslt.error_log)
            detail = "; ".join(texts) if texts else _clip(str(exc))
            return Outcome(None, error=_clip(f"The stylesheet failed: {detail}"))
        messages = tuple(_log_texts(self.xslt.error_log)[:MAX_MESSAGES])
        output = bytes(cast(Any, result))  # serialised as xsl:output says
        if len(output) > self.max_output:
            return Outcome(
                None, error=f"The output is larger than {self.max_output} bytes, the limit for "
                "one document", messages=messages,
            )
        return Outcome(output, self.extension(result), messages=messages)
