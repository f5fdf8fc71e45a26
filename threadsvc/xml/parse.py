"""The one hardened XML parser: no DTD, no entities, no network, no huge trees.

`hardened_parser` makes every parser of the package; what a parse may load is its `LoadPolicy`
(none: nothing; the schemas: only each other; a DTD schema: only itself).

A `<job>` body comes from any caller allowed to start a job, so it is bounded before it costs
anything: at most MAX_JOB_BODY bytes (the caller reads no more), at most MAX_JOB_ELEMENTS
elements (counted while parsing: the parse stops at the first one over), parameters of text
only. Its parse is a blocking call, which the web layer runs off the event loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from lxml import etree

from threadsvc.errors import BadParameter, BodyTooLarge

MAX_DEPTH = 256
MAX_JOB_BODY = 1024 * 1024  # parameters, not documents: files go in a multipart form
MAX_JOB_ELEMENTS = 1001  # <job> and 1000 <param>, as many fields as a form may hold
_FEED = 64 * 1024  # bytes fed to the parser between two counts of the elements

PullEvent = Literal["start", "end"]


class LoadPolicy(etree.Resolver):
    """What a parse (or a schema's compile) may load: the bytes `serve` gives for a URL, and
    nothing else; every other load raises the exception `refuse` makes of the URL and public id.
    """

    def __init__(
        self,
        refuse: Callable[[str | None, str | None], Exception],
        serve: Callable[[str], bytes | None] = lambda url: None,
    ) -> None:
        super().__init__()
        self._refuse = refuse
        self._serve = serve

    def resolve(self, system_url: str | None, public_id: str | None, context: object) -> Any:
        data = self._serve(system_url or "")
        if data is not None:
            return self.resolve_string(data, context)
        raise self._refuse(system_url, public_id)


def hardened_parser(
    policy: LoadPolicy | None = None,
    *,
    load_dtd: bool = False,
    remove_comments: bool = False,
    remove_pis: bool = False,
    events: tuple[PullEvent, ...] | None = None,
) -> etree.XMLParser:
    """The parser every part of threadsvc uses: no entities, no network, no huge trees, no DTD
    unless `load_dtd` (and then only what `policy` serves). With `events`, a pull parser (fed
    in parts) that tells those events."""
    options: dict[str, Any] = {
        "resolve_entities": False,
        "no_network": True,
        "load_dtd": load_dtd,
        "dtd_validation": False,
        "huge_tree": False,
        "remove_comments": remove_comments,
        "remove_pis": remove_pis,
    }
    parser = etree.XMLParser(**options) if events is None else etree.XMLPullParser(events, **options)
    if policy is not None:
        parser.resolvers.add(policy)
    return parser


def _body_parser(events: tuple[PullEvent, ...] | None = None) -> etree.XMLParser:
    return hardened_parser(remove_comments=True, remove_pis=True, events=events)


def parse_body(data: bytes, what: str = "body") -> etree._Element:
    """Parse a request body; any DTD (and so any entity) is refused, as is deep nesting."""
    try:
        root = etree.fromstring(data, _body_parser())
    except etree.XMLSyntaxError as exc:
        raise BadParameter(what, f"is not well-formed XML: {exc.msg}") from None
    return _checked(root, what)


def _checked(root: etree._Element, what: str) -> etree._Element:
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


def _parse_counted(data: bytes, what: str) -> etree._Element:
    """Parse, stopping as soon as the document holds more than MAX_JOB_ELEMENTS elements."""
    parser = _body_parser(events=("start",))
    assert isinstance(parser, etree.XMLPullParser)
    seen = 0
    try:
        for at in range(0, len(data), _FEED):
            parser.feed(data[at : at + _FEED])
            seen += sum(1 for _ in parser.read_events())
            if seen > MAX_JOB_ELEMENTS:
                raise BodyTooLarge(f"The <job> body holds more than {MAX_JOB_ELEMENTS} elements")
        root = parser.close()
    except etree.XMLSyntaxError as exc:
        raise BadParameter(what, f"is not well-formed XML: {exc.msg}") from None
    return _checked(root, what)


def parse_job_body(data: bytes) -> tuple[str, list[tuple[str, str]]]:
    """`<job name="NAME"><param name="N">V</param>...</job>` into the job and its fields.

    A parameter's value is its `value` attribute if present, else its text; a parameter
    holding elements is refused (its text alone would be a silently different value)."""
    if len(data) > MAX_JOB_BODY:
        raise BodyTooLarge(f"A <job> body may not be larger than {MAX_JOB_BODY} bytes")
    root = _parse_counted(data, "body")
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
        if len(child):
            raise BadParameter(pname, "may hold only text, not elements")
        value = child.get("value")
        fields.append((pname, value if value is not None else (child.text or "")))
    return name, fields
