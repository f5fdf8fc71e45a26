"""The one hardened XML parser: no DTD, no entities, no network, no huge trees."""

from __future__ import annotations

from lxml import etree

from threadsvc.errors import BadParameter

MAX_DEPTH = 256


def _parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_pis=True,
        remove_comments=True,
    )


def parse_body(data: bytes, what: str = "body") -> etree._Element:
    """Parse a request body; any DTD (and so any entity) is refused, as is deep nesting."""
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        raise BadParameter(what, f"is not well-formed XML: {exc.msg}") from None
    if root.getroottree().docinfo.doctype or root.getroottree().docinfo.internalDTD is not None:
        raise BadParameter(what, "may not have a DOCTYPE")
    for element in root.iter():
        if not isinstance(element.tag, str):
            raise BadParameter(what, "may not hold entity references")
    depth = 0
    for event, _ in etree.iterwalk(root, events=("start", "end")):
        depth += 1 if event == "start" else -1
        if depth > MAX_DEPTH:
            raise BadParameter(what, f"is nested deeper than {MAX_DEPTH} levels")
    return root


def parse_job_body(data: bytes) -> tuple[str, list[tuple[str, str]]]:
    """`<job name="NAME"><param name="N">V</param>...</job>` into the job and its fields.

    A parameter's value is its `value` attribute if present, else its text."""
    root = parse_body(data)
    if root.tag != "job":
        raise BadParameter("body", f"must be a <job> element, not <{root.tag!s}>")
    name = root.get("name")
    if not name:
        raise BadParameter("job", "is missing (the name attribute of <job>)")
    fields: list[tuple[str, str]] = []
    for child in root:
        if child.tag != "param":
            raise BadParameter("body", f"<job> may hold only <param> elements, not <{child.tag!s}>")
        pname = child.get("name")
        if not pname:
            raise BadParameter("body", "has a <param> without a name attribute")
        value = child.get("value")
        fields.append((pname, value if value is not None else (child.text or "")))
    return name, fields
