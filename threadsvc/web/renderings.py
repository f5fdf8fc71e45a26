"""A cache of rendered threads, so that a thousand clients polling one thread cost one
rendering per visible state."""

from __future__ import annotations

from cachetools import LRUCache

from threadsvc.models import Thread
from threadsvc.web.responses import serialise
from threadsvc.xml import render


class Renderings:
    """Polled threads are rendered once per visible state, not once per poll: the version moves
    with every visible change, the heartbeat (shown to administrators only) without one.
    Documents (XML or JSON) and event-stream lines share the cache; a thread with a result is
    never cached, as each answer signs a fresh link."""

    def __init__(self, size: int = 4096) -> None:
        self._cache: LRUCache[tuple[str, int, int | None, bool, str], bytes | str] = LRUCache(size)

    def _key(self, thread: Thread, admin: bool, form: str) -> tuple[str, int, int | None, bool, str]:
        return thread.id, thread.version, thread.heartbeat if admin else None, admin, form

    def document(self, thread: Thread, admin: bool, as_json: bool) -> bytes:
        key = self._key(thread, admin, "json" if as_json else "xml")
        body = self._cache.get(key)
        if not isinstance(body, bytes):
            body = self._cache[key] = serialise(render.thread_element(thread, admin=admin), as_json)
        return body

    def line(self, thread: Thread, admin: bool) -> str:
        key = self._key(thread, admin, "line")
        line = self._cache.get(key)
        if not isinstance(line, str):
            line = self._cache[key] = render.to_line(render.thread_element(thread, admin=admin))
        return line
