"""Validating uploaded documents against an uploaded schema (the `validate` job), and its report.

Everything here reads what users upload, so nothing is trusted:

- Documents go through one hardened parser: no DTD is loaded, no entity is expanded, no
  network, no huge trees (libxml2's amplification guard turns a billion-laughs document into a
  syntax error). An entity reference left in a document is a finding, except an internal
  entity when validating against a DTD. A malformed document is a finding, never an exception.
- A schema is one self-contained file. References to other files (xs:include, xs:import with
  a schemaLocation, xs:redefine, xs:override; RELAX NG include and externalRef; compact
  `include` and `external`; Schematron include and extends; xsl:include and xsl:import) are
  refused before compiling. A resolver that refuses every load backs that up where libxml2
  asks resolvers (XSD); its RELAX NG compiler does not, hence the check on the tree.
- A `.dtd` schema is served to the parser as the external subset of an empty document by a
  resolver that knows that one file only, so a parameter entity naming any other file or URL
  fails instead of being read (`etree.DTD()` would read it).
- Schematron's validating XSLT runs with access control that denies every file and the
  network (`document()` fails).

A Validator is compiled once per job and then used by one OS thread at a time (lxml keeps the
last error log on the schema objects).
"""

from __future__ import annotations

import abc
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, BinaryIO, Literal

from lxml import etree, isoschematron

from threadsvc.xml.parse import LoadPolicy, hardened_parser
from threadsvc.xml.render import xml_safe

SchemaKind = Literal["xsd", "rng", "rnc", "schematron", "dtd"]
KINDS: tuple[SchemaKind, ...] = ("xsd", "rng", "rnc", "schematron", "dtd")
EXTENSIONS: dict[str, SchemaKind] = {
    ".xsd": "xsd", ".rng": "rng", ".rnc": "rnc", ".sch": "schematron", ".dtd": "dtd",
}
FindingLevel = Literal["error", "warning"]

MAX_FINDINGS = 100  # per document; past it one more finding says how many were left out
MAX_TEXT = 2_000  # characters of one finding

XSD_NS = "http://www.w3.org/2001/XMLSchema"
RNG_NS = "http://relaxng.org/ns/structure/1.0"
SCH_NS = "http://purl.oclc.org/dsdl/schematron"
SVRL_NS = "http://purl.oclc.org/dsdl/svrl"
XSL_NS = "http://www.w3.org/1999/XSL/Transform"
WARNING_ROLES = frozenset({"warning", "warn", "info", "information"})
DTD_NAME = "threadsvc-schema.dtd"  # the one name the .dtd resolver serves


class SchemaError(ValueError):
    """The schema cannot be used: not well-formed, not compilable, or not self-contained."""


@dataclass(frozen=True)
class Finding:
    level: FindingLevel
    line: int  # 0 when not known
    column: int  # 0 when not known
    text: str


# -- parsers ----------------------------------------------------------------------------------
def _refuse_all(system_url: str | None, public_id: str | None) -> Exception:
    """Every file, URL or entity a parse or a schema compile asks for is refused."""
    return OSError(f"{(system_url or public_id or '?')[:200]} is not loaded: the schema "
                   "and the documents must be self-contained")


def _dtd_policy(data: bytes) -> LoadPolicy:
    """Serves the uploaded DTD under DTD_NAME and refuses everything else."""

    def refuse(system_url: str | None, public_id: str | None) -> Exception:
        return OSError(f"{(system_url or public_id or '?')[:200]} is not loaded: a DTD schema "
                       "must be self-contained")

    return LoadPolicy(refuse, lambda url: data if url == DTD_NAME else None)


def _document_parser() -> etree.XMLParser:
    return hardened_parser(LoadPolicy(_refuse_all))


def _parse_schema(data: bytes, name: str) -> etree._Element:
    parser = _document_parser()
    try:
        return etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise SchemaError(f"The schema {name} is not well-formed XML: {_where(exc)}") from None


def _where(exc: etree.XMLSyntaxError) -> str:
    return str(exc.msg)  # libxml2's message, which ends with the line and column


def _refuse(root: etree._Element, name: str, tags: dict[str, str]) -> None:
    """A SchemaError if the schema holds an element of `tags` (tag -> what to call it)."""
    for element in root.iter(*tags):
        if element.tag == f"{{{XSD_NS}}}import" and element.get("schemaLocation") is None:
            continue  # an import of a namespace only loads nothing
        target = element.get("schemaLocation") or element.get("href") or ""
        raise SchemaError(
            f"The schema {name} refers to another file ({tags[str(element.tag)]} {target!r} "
            f"on line {element.sourceline}): a schema must be one self-contained file"
        )


def _errors(log: Any, what: str) -> str:
    entries = [e for e in log if e.level >= etree.ErrorLevels.ERROR] or list(log)
    if not entries:
        return what
    first = entries[0]
    more = f" (and {len(entries) - 1} more)" if len(entries) > 1 else ""
    line = f" (line {first.line})" if first.line else ""
    return f"{what}: {first.message}{line}{more}"


def _finding(entry: Any, prefix: str = "") -> Finding:
    level: FindingLevel = "warning" if entry.level <= etree.ErrorLevels.WARNING else "error"
    return Finding(level, max(entry.line or 0, 0), max(entry.column or 0, 0),
                   _text(prefix + str(entry.message)))


def _text(text: str) -> str:
    cleaned = " ".join(xml_safe(text).split())
    return cleaned if len(cleaned) <= MAX_TEXT else cleaned[: MAX_TEXT - 1] + "…"


# -- validators -------------------------------------------------------------------------------
class Validator(abc.ABC):
    """A compiled schema: `check(document bytes)` gives the document's findings."""

    kind: SchemaKind = "dtd"
    internal_entities = False  # whether internal entity references are left to the schema

    def __init__(self) -> None:
        self._parser = _document_parser()

    def check(self, data: bytes) -> list[Finding]:
        try:
            root = etree.fromstring(data, self._parser)
        except etree.XMLSyntaxError as exc:
            return _capped(self._syntax_findings(exc))
        except OSError as exc:  # the resolver refused a load (not expected with load_dtd off)
            return [Finding("error", 0, 0, _text(str(exc)))]
        findings = self._entity_findings(root)
        if not findings:
            try:
                findings = self._validate(root)
            except etree.Error as exc:
                findings = [Finding("error", 0, 0, _text(f"The document could not be "
                                                         f"validated: {exc}"))]
        return _capped(findings)

    def _syntax_findings(self, exc: etree.XMLSyntaxError) -> list[Finding]:
        found = [_finding(e, "Not well-formed: ") for e in self._parser.error_log
                 if e.level >= etree.ErrorLevels.ERROR]
        if found:
            return found
        line, column = exc.position
        return [Finding("error", line or 0, column or 0, _text(f"Not well-formed: {exc.msg}"))]

    def _entity_findings(self, root: etree._Element) -> list[Finding]:
        references = [n for n in root.iter(etree.Entity) if isinstance(n, etree._Entity)]
        if not references:
            return []
        declared: dict[str, bool] = {}  # name -> external
        dtd = root.getroottree().docinfo.internalDTD
        if dtd is not None:
            declared = {str(e.name): e.system_url is not None for e in dtd.iterentities()}
        findings = []
        for ref in references:
            name = str(ref.name)
            if name not in declared or declared[name]:
                text = f"Entity &{name}; is not loaded: external entities are never read"
            elif self.internal_entities:
                continue
            else:
                text = (f"Entity &{name}; is not expanded: entities declared in a document "
                        "are used only when validating against a DTD")
            findings.append(Finding("error", ref.sourceline or 0, 0, text))
        return findings

    @abc.abstractmethod
    def _validate(self, root: etree._Element) -> list[Finding]:
        """The findings of one parsed document; each schema language has its own."""


class _Xsd(Validator):
    kind: SchemaKind = "xsd"

    def __init__(self, data: bytes, name: str) -> None:
        super().__init__()
        tree = _parse_schema(data, name)
        _refuse(tree, name, {f"{{{XSD_NS}}}include": "xs:include",
                             f"{{{XSD_NS}}}import": "xs:import",
                             f"{{{XSD_NS}}}redefine": "xs:redefine",
                             f"{{{XSD_NS}}}override": "xs:override"})
        try:
            self._schema = etree.XMLSchema(tree)
        except etree.XMLSchemaParseError as exc:
            raise SchemaError(_errors(exc.error_log, f"The XSD {name} cannot be used")) from None

    def _validate(self, root: etree._Element) -> list[Finding]:
        self._schema.validate(root)
        return [_finding(e) for e in self._schema.error_log]


class _Rng(Validator):
    kind: SchemaKind = "rng"

    def __init__(self, data: bytes, name: str, compact: bool = False) -> None:
        super().__init__()
        if compact:
            self.kind = "rnc"
            data = _rnc_to_rng(data, name)
        tree = _parse_schema(data, name)
        _refuse(tree, name, {f"{{{RNG_NS}}}include": "include",
                             f"{{{RNG_NS}}}externalRef": "externalRef"})
        try:
            self._schema = etree.RelaxNG(tree)
        except etree.RelaxNGParseError as exc:
            raise SchemaError(
                _errors(exc.error_log, f"The RELAX NG schema {name} cannot be used")
            ) from None

    def _validate(self, root: etree._Element) -> list[Finding]:
        self._schema.validate(root)
        return [_finding(e) for e in self._schema.error_log]


def _rnc_to_rng(data: bytes, name: str) -> bytes:
    """RELAX NG compact syntax to XML syntax with rnc2rng, which reads the files that
    `include` and `external` name while it parses: those are refused on its tokens first."""
    try:
        import rnc2rng  # type: ignore[import-untyped]
        from rnc2rng import parser as rnc_parser
    except ImportError:  # pragma: no cover - a dependency of the package
        raise SchemaError("RELAX NG compact syntax needs the rnc2rng package") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise SchemaError(f"The schema {name} is not UTF-8 text") from None
    try:
        for token in rnc_parser.lex(text):
            if token.gettokentype() in ("INCLUDE", "EXTERNAL"):
                raise SchemaError(
                    f"The schema {name} refers to another file ({token.getstr()} on line "
                    f"{token.getsourcepos().lineno}): a schema must be one self-contained file"
                )
        return str(rnc2rng.dumps(rnc2rng.loads(text))).encode("utf-8")
    except SchemaError:
        raise
    except Exception as exc:  # noqa: BLE001 - rnc2rng reports bad syntax in assorted ways
        where = re.search(r"\[(\d+):(\d+)\]", str(exc))  # rnc2rng's ParseError: [LINE:COL]
        detail = f" (error at line {where[1]}, column {where[2]})" if where else ""
        raise SchemaError(f"The schema {name} is not RELAX NG compact syntax{detail}") from None


class _Schematron(Validator):
    kind: SchemaKind = "schematron"

    def __init__(self, data: bytes, name: str) -> None:
        super().__init__()
        tree = _parse_schema(data, name)
        if tree.tag != f"{{{SCH_NS}}}schema":
            raise SchemaError(f"The schema {name} is not ISO Schematron (a <schema> in {SCH_NS})")
        _refuse(tree, name, {f"{{{SCH_NS}}}include": "sch:include",
                             f"{{{SCH_NS}}}extends": "sch:extends",
                             f"{{{XSL_NS}}}include": "xsl:include",
                             f"{{{XSL_NS}}}import": "xsl:import"})
        # lxml's own steps (abstract patterns, then the skeleton to XSLT 1.0), without its
        # include step; the resulting stylesheet is compiled here with every access denied.
        try:
            expanded = isoschematron.iso_abstract_expand(tree)
            if isoschematron.schematron_schema_valid_supported:
                valid = isoschematron.schematron_schema_valid
                if not valid(expanded):
                    raise SchemaError(_errors(valid.error_log, f"The Schematron {name} is invalid"))
            stylesheet = isoschematron.iso_svrl_for_xslt1(expanded)
            self._xslt = etree.XSLT(
                stylesheet, access_control=etree.XSLTAccessControl.DENY_ALL
            )
        except (etree.XSLTParseError, etree.XSLTApplyError) as exc:
            raise SchemaError(
                _errors(exc.error_log, f"The Schematron {name} cannot be compiled")
            ) from None

    def _validate(self, root: etree._Element) -> list[Finding]:
        try:
            report = self._xslt(root.getroottree())
        except etree.XSLTApplyError as exc:
            return [Finding("error", 0, 0, _text(f"The Schematron rules could not be applied: "
                                                 f"{exc}"))]
        out = report.getroot()
        if out is None:
            return []
        findings = []
        for item in out.iter(f"{{{SVRL_NS}}}failed-assert", f"{{{SVRL_NS}}}successful-report"):
            role = (item.get("role") or "").strip().lower()
            level: FindingLevel = "warning" if role in WARNING_ROLES else "error"
            text = item.findtext(f"{{{SVRL_NS}}}text") or item.get("test") or "Schematron"
            findings.append(Finding(level, _line_of(root, item.get("location")), 0, _text(text)))
        return findings


def _line_of(root: etree._Element, location: str | None) -> int:
    """The line of the node an SVRL location names (0 when it cannot be found)."""
    if not location:
        return 0
    try:
        found = root.getroottree().xpath(location)
    except (etree.XPathError, ValueError):
        return 0
    node = found[0] if isinstance(found, list) and found else None
    if node is not None and not isinstance(node, etree._Element):
        node = getattr(node, "getparent", lambda: None)()  # an attribute's or text's element
    line = node.sourceline if isinstance(node, etree._Element) else None
    return int(line or 0)


class _Dtd(Validator):
    """A DTD file, served as the external subset of an empty document."""

    kind: SchemaKind = "dtd"
    internal_entities = True

    def __init__(self, data: bytes, name: str) -> None:
        super().__init__()
        parser = hardened_parser(_dtd_policy(data), load_dtd=True)
        holder = etree.Element("dtd")  # the document that names the DTD, built, not written
        doc = etree.tostring(etree.ElementTree(holder), doctype=f'<!DOCTYPE dtd SYSTEM "{DTD_NAME}">')
        try:
            tree = etree.fromstring(doc, parser).getroottree()
        except etree.XMLSyntaxError as exc:
            raise SchemaError(f"The DTD {name} cannot be used: {_where(exc)}") from None
        except OSError as exc:  # the resolver refused a file the DTD names
            raise SchemaError(f"The DTD {name} cannot be used: {exc}") from None
        dtd = tree.docinfo.externalDTD
        if dtd is None:
            raise SchemaError(f"The DTD {name} cannot be used")
        self._dtd = dtd

    def _validate(self, root: etree._Element) -> list[Finding]:
        self._dtd.validate(root)
        return [_finding(e) for e in self._dtd.error_log]


class _InternalDtd(Validator):
    """Each document's own internal DTD subset (an external DTD is never loaded)."""

    kind: SchemaKind = "dtd"
    internal_entities = True

    def _validate(self, root: etree._Element) -> list[Finding]:
        dtd = root.getroottree().docinfo.internalDTD
        if dtd is None or next(iter(dtd.iterelements()), None) is None:
            return [Finding("error", 1, 0, "The document has no internal DTD subset declaring "
                            "its elements (external DTDs are never loaded)")]
        dtd.validate(root)
        return [_finding(e) for e in dtd.error_log]


def compile_schema(kind: SchemaKind, data: bytes | None, name: str = "schema") -> Validator:
    """A Validator for a schema of `kind` (raises SchemaError); `data` None with kind `dtd`
    validates each document against its own internal DTD subset."""
    if data is None:
        if kind != "dtd":
            raise SchemaError(f"A {kind} schema needs a schema file")
        return _InternalDtd()
    name = _text(name)[:200]
    if kind == "xsd":
        return _Xsd(data, name)
    if kind in ("rng", "rnc"):
        return _Rng(data, name, compact=kind == "rnc")
    if kind == "schematron":
        return _Schematron(data, name)
    if kind == "dtd":
        return _Dtd(data, name)
    raise SchemaError(f"Unknown schema type {kind!r}")


def _capped(findings: list[Finding]) -> list[Finding]:
    if len(findings) <= MAX_FINDINGS:
        return findings
    errors = any(f.level == "error" for f in findings[MAX_FINDINGS:])
    left = len(findings) - MAX_FINDINGS
    note = Finding("error" if errors else "warning", 0, 0, f"{left} more findings not shown")
    return [*findings[:MAX_FINDINGS], note]


# -- the report -------------------------------------------------------------------------------
@dataclass(frozen=True)
class DocumentReport:
    path: str
    findings: tuple[Finding, ...]

    @property
    def valid(self) -> bool:
        return not any(f.level == "error" for f in self.findings)


def document_element(document: DocumentReport) -> etree._Element:
    el = etree.Element("document")
    el.set("path", xml_safe(document.path))
    el.set("status", "valid" if document.valid else "invalid")
    for finding in document.findings:
        child = etree.SubElement(el, "finding")
        child.set("level", finding.level)
        child.set("line", str(finding.line))
        child.set("column", str(finding.column))
        child.text = finding.text
    return el


def write_report(
    out: BinaryIO,
    documents: Iterable[DocumentReport],
    *,
    total: int,
    valid: int,
    schema: str | None,
    kind: SchemaKind,
) -> None:
    """`<validation-report total valid invalid schema-type [schema]>` with one `<document>` per
    document, streamed to `out` one document at a time (validation-report.xsd)."""
    attributes = {"total": str(total), "valid": str(valid), "invalid": str(total - valid),
                  "schema-type": kind}
    if schema is not None:
        attributes["schema"] = xml_safe(schema)
    with etree.xmlfile(out, encoding="utf-8") as xf:
        xf.write_declaration()
        with xf.element("validation-report", attributes):
            for document in documents:
                xf.write("\n")
                xf.write(document_element(document))
            xf.write("\n")

