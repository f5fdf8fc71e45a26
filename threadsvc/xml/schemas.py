"""The published XSDs (the package's `schemas/` directory), compiled once, and `validate()`.

Each schema is read through importlib.resources, so this works from a wheel or a zip as well
as from a source tree. `xs:include` between them is served by a resolver that only knows the
schemas directory: compiling a schema never reads another file and never uses the network.
"""

from __future__ import annotations

import functools
from importlib import resources
from importlib.resources.abc import Traversable

from lxml import etree

from threadsvc.errors import BadParameter
from threadsvc.xml.parse import LoadPolicy, hardened_parser, parse_body

# Root element name -> the schema that describes it.
SCHEMAS: dict[str, str] = {
    "thread": "thread.xsd",
    "threads": "threads.xsd",
    "thread-cancel": "thread-cancel.xsd",
    "logs": "logs.xsd",
    "audit": "audit.xsd",
    "error": "error.xsd",
    "webhook": "webhook.xsd",
    "webhooks": "webhooks.xsd",
    "validation-report": "validation-report.xsd",
    "jobs": "jobs.xsd",
    "nodes": "controls.xsd",
    "node": "controls.xsd",
    "paused-jobs": "controls.xsd",
}


def _directory() -> Traversable:
    return resources.files("threadsvc") / "schemas"


def _serve_schema(url: str) -> bytes | None:
    """`schemaLocation="NAME.xsd"` names the packaged schema NAME.xsd; nothing else is served."""
    name = url.replace("\\", "/").rsplit("/", 1)[-1]
    if name.endswith(".xsd") and name in SCHEMAS.values():
        return (_directory() / name).read_bytes()
    return None


def _refuse(system_url: str | None, public_id: str | None) -> Exception:
    # Raised by the resolver, this makes the include (so the schema) fail.
    return OSError(f"threadsvc schemas may include only each other, not {system_url!r}")


def _schema_parser() -> etree.XMLParser:
    return hardened_parser(LoadPolicy(_refuse, _serve_schema), remove_comments=True)


@functools.cache
def schema(filename: str) -> etree.XMLSchema:
    """The compiled schema of the packaged file `filename` (compiled once per process)."""
    data = (_directory() / filename).read_bytes()
    # The base URL names the file, so that relative includes resolve to sibling names.
    tree = etree.fromstring(data, _schema_parser(), base_url=f"threadsvc-schemas/{filename}")
    return etree.XMLSchema(tree)


def schema_for(root: str) -> etree.XMLSchema:
    """The schema that describes a document whose root element is `root`."""
    filename = SCHEMAS.get(root)
    if filename is None:
        raise ValueError(f"No schema for a <{root}> document")
    return schema(filename)


def validate(document: bytes) -> None:
    """Check a document against the schema chosen by its root element's name.

    Raises ValueError with the schema's error log when the document is invalid, is not
    well-formed (or has a DOCTYPE), or has a root element that no schema describes.
    The compiled schemas are shared: call this from one OS thread at a time per schema
    (lxml keeps the last error log on the schema object)."""
    try:
        root = parse_body(document, "document")
    except BadParameter as exc:
        raise ValueError(str(exc)) from None
    if not isinstance(root.tag, str):  # a comment or PI, not an element: a bad document
        raise ValueError("The document has no root element")  # noqa: TRY004
    xsd = schema_for(root.tag)
    if not xsd.validate(root):
        details = "\n".join(f"line {e.line}: {e.message}" for e in xsd.error_log)
        raise ValueError(f"Invalid <{root.tag}> document ({SCHEMAS[root.tag]}):\n{details}")
