"""The one builder of documents: lxml elements, serialised as XML or mirrored as JSON.

Every string shown comes from the store, and the store may hold anything: a row written
before a rule existed, by another version, or by hand. lxml refuses characters XML 1.0 cannot
hold (a 500 for every list showing that row), so each stored string goes through `xml_safe`
(U+FFFD for each such character) on its way into an element; the JSON mirror, the event
stream and the text log are made from the same cleaned strings. The text log also makes each
event exactly one line (`text_line`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lxml import etree

from threadsvc.models import (
    BEHIND,
    AuditPage,
    Delivery,
    LogEvent,
    LogPage,
    Thread,
    ThreadPage,
    Webhook,
    iso,
)
from threadsvc.runner.params import Described, describe

if TYPE_CHECKING:
    from threadsvc.controls import NodeView
    from threadsvc.runner.registry import JobSpec
    from threadsvc.store.controls import PausedJob

Element = etree._Element

# Attributes that JSON carries as numbers or booleans rather than strings.
_NUMBERS = frozenset(
    {"groupid", "warnings", "errors", "current", "total", "percent", "page", "pagesize",
     "seq", "timestamp", "next", "size", "attempts", "code",
     "running", "max-running", "max-running-set"}  # the last three: a <node>
)
_BOOLEANS = frozenset({"more", "draining", "empty", "stale"})
# Roots that JSON renders as a list of their children beside their attributes.
_LIST_ROOTS = {"threads": "threads", "logs": "logs", "groups": "groups"}


@dataclass(frozen=True)
class ResultLink:
    href: str  # a pre-signed URL
    expires: int  # epoch ms


def thread_element(
    thread: Thread, *, admin: bool = False, link: ResultLink | None = None
) -> Element:
    """`link` is given when the thread has a result that is still kept."""
    el = etree.Element("thread")
    _set(el, "id", thread.id)
    _set(el, "name", thread.name)
    _set(el, "username", thread.username)
    el.set("groupid", str(thread.group_id))
    el.set("status", thread.status.value)
    _set(el, "type", thread.job)
    el.set("created", iso(thread.created))
    if thread.started is not None:
        el.set("started", iso(thread.started))
    if thread.ended is not None:
        el.set("ended", iso(thread.ended))
    el.set("warnings", str(thread.warnings))
    el.set("errors", str(thread.errors))
    if admin and not thread.final:
        if thread.node:
            _set(el, "node", thread.node)
        if thread.heartbeat is not None:
            el.set("heartbeat", iso(thread.heartbeat))
    if thread.message:
        etree.SubElement(el, "message").text = xml_safe(thread.message)
    if thread.progress_current is not None or thread.progress_total is not None:
        progress = etree.SubElement(el, "progress")
        current = thread.progress_current or 0
        progress.set("current", str(current))
        if thread.progress_total is not None:
            progress.set("total", str(thread.progress_total))
            if thread.progress_total > 0:
                progress.set("percent", str(100 * current // thread.progress_total))
    if link is not None and thread.result is not None and thread.result.deletion is not None:
        result = etree.SubElement(el, "result")
        _set(result, "href", link.href)
        _set(result, "media-type", thread.result.media_type)
        result.set("size", str(thread.result.size))
        result.set("expires", iso(link.expires))
        result.set("deletion", iso(thread.result.deletion))
    return el


def threads_element(
    page: ThreadPage, *, admin: bool = False, links: dict[str, ResultLink] | None = None
) -> Element:
    el = etree.Element("threads")
    el.set("total", str(page.total))
    el.set("page", str(page.page))
    el.set("pagesize", str(page.pagesize))
    for thread in page.threads:
        el.append(thread_element(thread, admin=admin, link=(links or {}).get(thread.id)))
    return el


def thread_cancel_element(
    thread: Thread | None, *, admin: bool = False, link: ResultLink | None = None
) -> Element:
    el = etree.Element("thread-cancel")
    if thread is not None:
        el.append(thread_element(thread, admin=admin, link=link))
    return el


def event_element(event: LogEvent) -> Element:
    el = etree.Element("event")
    el.set("seq", str(event.seq))
    el.set("timestamp", str(event.timestamp))
    el.set("datetime", iso(event.timestamp))
    el.set("level", event.level.name)
    el.text = xml_safe(event.text)
    return el


def logs_element(page: LogPage) -> Element:
    el = etree.Element("logs")
    _set(el, "thread", page.thread_id)
    el.set("total", str(page.total))
    el.set("next", str(page.next))
    el.set("more", "true" if page.more else "false")
    for event in page.events:
        el.append(event_element(event))
    return el


def logs_text(events: Iterable[LogEvent]) -> str:
    """One line an event: `DATETIME LEVEL text`, the text made one line by `text_line`."""
    return "".join(f"{iso(e.timestamp)} {e.level.name} {text_line(e.text)}\n" for e in events)


# Everything str.splitlines() ends a line at (CR LF counts once), so that no text can start a
# line of its own in the text log (a forged `... ERROR ...` event); and the other C0 and C1
# control characters but TAB (ESC would drive a terminal that shows the log); and the bidi
# embeddings, overrides and isolates, which make a line read in another order than it is
# written (a name ending in U+202E shows what follows it reversed).
_LINE_BREAKS = re.compile("\r\n|[\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")
_CONTROLS = re.compile("[\x00-\x08\x0e-\x1b\x1f\x7f-\x84\x86-\x9f\u202a-\u202e\u2066-\u2069]")


def text_line(text: str) -> str:
    """`text` as one line: each line break a space, other control characters (and bidi
    overrides) U+FFFD."""
    return xml_safe(_CONTROLS.sub("\ufffd", _LINE_BREAKS.sub(" ", text)))


def error_element(error_id: str, request: str, message: str) -> Element:
    """Both texts may echo what a client sent, so characters XML cannot hold are replaced."""
    el = etree.Element("error")
    el.set("id", error_id)
    etree.SubElement(el, "request").text = xml_safe(request)
    etree.SubElement(el, "message").text = xml_safe(message) or "Error"
    return el


_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def xml_safe(text: str) -> str:
    """`text` with U+FFFD for each character XML 1.0 cannot hold (C0 controls but TAB, LF and
    CR; lone surrogates; U+FFFE and U+FFFF)."""
    return _NOT_XML.sub("\ufffd", text)


def _set(el: Element, name: str, value: str) -> None:
    """A stored string as an attribute; an empty one as U+FFFD (the attributes it sets are
    never empty in the published schemas)."""
    el.set(name, xml_safe(value) or "\ufffd")


def to_xml(element: Element) -> bytes:
    return etree.tostring(element, encoding="utf-8", xml_declaration=True)


def to_line(element: Element) -> str:
    """The element as XML on one line (for Server-Sent Events, whose lines end at CR or LF;
    lxml already writes a CR as `&#13;`)."""
    return etree.tostring(element, encoding="unicode").replace("\n", "&#10;").replace("\r", "&#13;")


def _value(name: str, text: str) -> Any:
    if name in _NUMBERS:
        try:
            return int(text)
        except ValueError:
            return text
    if name in _BOOLEANS:
        return text == "true"
    return text


def _object(el: Element) -> dict[str, Any]:
    obj: dict[str, Any] = {str(k): _value(str(k), str(v)) for k, v in el.attrib.items()}
    for child in el:
        if not child.attrib and len(child) == 0:
            obj[str(child.tag)] = child.text or ""
        else:
            obj[str(child.tag)] = _object(child)
    if el.text and el.text.strip() and len(el) == 0:
        obj["text"] = el.text
    return obj


def to_json_data(element: Element) -> dict[str, Any]:
    """The JSON mirror: `{"thread": {...}}`, `{"threads": [...], "total": N, ...}`."""
    tag = str(element.tag)
    if tag in _LIST_ROOTS:
        data: dict[str, Any] = {tag: [_object(child) for child in element]}
        data.update({str(k): _value(str(k), str(v)) for k, v in element.attrib.items()})
        return data
    return {tag: _object(element)}


def to_json(element: Element) -> bytes:
    return json.dumps(to_json_data(element), ensure_ascii=False, separators=(",", ":")).encode()


# -- the audit log (docs/api.md#audit) --------------------------------------------------------------
_LIST_ROOTS["audit"] = "audit"


def audit_element(page: AuditPage) -> Element:
    """`<audit next more>` holding `<entry seq timestamp datetime action [actor] target [group]
    [address]>detail</entry>`, oldest first: as a log page, `next` is the following `since`."""
    el = etree.Element("audit")
    el.set("next", str(page.next))
    el.set("more", "true" if page.more else "false")
    for entry in page.entries:
        item = etree.SubElement(el, "entry")
        item.set("seq", str(entry.id))
        item.set("timestamp", str(entry.timestamp))
        item.set("datetime", iso(entry.timestamp))
        _set(item, "action", entry.action)
        for name, value in (("actor", entry.actor), ("target", entry.target),
                            ("group", entry.group), ("address", entry.address)):
            if value is not None:
                _set(item, name, value)
        item.text = xml_safe(entry.detail)
    return el


# -- webhooks (docs/api.md#webhooks) ---------------------------------------------------------------
_LIST_ROOTS["webhooks"] = "webhooks"


def webhook_element(webhook: Webhook, deliveries: Iterable[Delivery] = ()) -> Element:
    """`<webhook id url events groupid created>` with `<delivery>` children; never the secret."""
    el = etree.Element("webhook")
    el.set("id", str(webhook.id))
    _set(el, "url", webhook.url)
    _set(el, "events", webhook.events)
    el.set("groupid", str(webhook.group_id))
    el.set("created", iso(webhook.created))
    for delivery in deliveries:
        el.append(delivery_element(delivery))
    return el


def delivery_element(delivery: Delivery) -> Element:
    el = etree.Element("delivery")
    _set(el, "id", delivery.id)
    _set(el, "thread", delivery.thread_id)
    _set(el, "event", delivery.event)
    _set(el, "status", delivery.status)
    el.set("attempts", str(delivery.attempts))
    el.set("created", iso(delivery.created))
    if delivery.last_attempt is not None:
        el.set("last-attempt", iso(delivery.last_attempt))
    if delivery.code is not None:
        el.set("code", str(delivery.code))
    if delivery.status == "pending" and delivery.next_attempt < BEHIND:  # not behind another
        el.set("next-attempt", iso(delivery.next_attempt))
    return el


def webhooks_element(webhooks: Iterable[Webhook]) -> Element:
    el = etree.Element("webhooks")
    for webhook in webhooks:
        el.append(webhook_element(webhook))
    return el


def webhook_to_json(element: Element) -> bytes:
    """`{"webhook": {..., "deliveries": [...]}}`: deliveries are a list, which the generic
    mirror (one key per child element) cannot express."""
    data = {name: _value(name, value) for name, value in element.attrib.items()}
    data["deliveries"] = [_object(child) for child in element if child.tag == "delivery"]
    return json.dumps({element.tag: data}, ensure_ascii=False, separators=(",", ":")).encode()



# -- jobs (docs/api.md#the-jobs-one-may-start) -------------------------------------------------
def jobs_element(specs: Iterable[JobSpec]) -> Element:
    """`<jobs>`: each job with its level, minimum role and parameters; a parameter's optional
    attributes only where the job declared them (`choices` joined with commas)."""
    el = etree.Element("jobs")
    for spec in specs:
        job = etree.SubElement(el, "job")
        for name, value in _job_data(spec).items():
            _set(job, name, value)
        for name, param in spec.params.items():
            item = etree.SubElement(job, "param")
            for key, value in _param_data(name, describe(param)).items():
                _set(item, key, _attribute(value))
    return el


def jobs_to_json(specs: Iterable[JobSpec]) -> bytes:
    """`{"jobs": [{..., "params": [...]}]}`: as the XML, with `required` and `multiple` as
    booleans, `min`, `max` and a number's `default` as numbers, and `choices` a list."""
    jobs = [
        {**_job_data(spec),
         "params": [_param_data(name, describe(param)) for name, param in spec.params.items()]}
        for spec in specs
    ]
    return json.dumps({"jobs": jobs}, ensure_ascii=False, separators=(",", ":")).encode()


def _job_data(spec: JobSpec) -> dict[str, str]:
    data = {"name": spec.name, "level": spec.scope.value, "role": spec.role.label}
    if spec.title:
        data["title"] = spec.title
    return data


def _param_data(name: str, param: Described) -> dict[str, Any]:
    data: dict[str, Any] = {"name": name, "type": param.type, "required": param.required}
    if param.multiple:
        data["multiple"] = True
    optional = {"min": param.minimum, "max": param.maximum, "pattern": param.pattern,
                "choices": list(param.choices) if param.choices is not None else None,
                "default": param.default}
    data.update({key: value for key, value in optional.items() if value is not None})
    return data


def _attribute(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(value)
    return str(value)


# -- the administrators' controls (docs/api.md#controls) ---------------------------------------
_LIST_ROOTS["nodes"] = "nodes"
_LIST_ROOTS["paused-jobs"] = "paused-jobs"


def node_element(node: NodeView) -> Element:
    """`<node name running max-running [max-running-set] draining empty stale started heartbeat
    heartbeat-age>`."""
    row = node.row
    el = etree.Element("node")
    _set(el, "name", row.node)
    el.set("running", str(row.running))
    el.set("max-running", str(row.capacity))
    if row.max_running is not None:
        el.set("max-running-set", str(row.max_running))
    for name, flag in (("draining", row.draining), ("empty", row.empty), ("stale", node.stale)):
        el.set(name, "true" if flag else "false")
    el.set("started", iso(row.started))
    el.set("heartbeat", iso(row.seen))
    el.set("heartbeat-age", f"{node.age:.1f}")
    return el


def nodes_element(nodes: Iterable[NodeView]) -> Element:
    el = etree.Element("nodes")
    el.extend(node_element(node) for node in nodes)
    return el


def paused_jobs_element(paused: Iterable[PausedJob]) -> Element:
    """`<paused-jobs>` holding `<paused-job job since [by]>`."""
    el = etree.Element("paused-jobs")
    for found in paused:
        item = etree.SubElement(el, "paused-job")
        _set(item, "job", found.job)
        item.set("since", iso(found.paused))
        if found.actor is not None:
            _set(item, "by", found.actor)
    return el
