"""Repeated warnings and errors are logged at most once a second, with a count.

Threat model: a client that can make the server fail the same way thousands of times a second
(an accept() failing for want of file descriptors, a connection refused at the cap) must not
fill the disk with the log nor spend the server's time writing it: 217,087 lines (96 MB) in
13 s were seen. Records of the same logger, level and text (the message as formatted, so that
lines which say different things, such as failed sign-ins of other names or addresses, are all
written) within a second of the last one written are dropped; the next one written says how
many were. Information
records (the access log) pass untouched.
"""

from __future__ import annotations

import logging
import threading
import time

INTERVAL = 1.0
MAX_KINDS = 1000  # distinct messages remembered; beyond, the memory starts afresh


class RepeatLimit(logging.Filter):
    def __init__(self, interval: float = INTERVAL) -> None:
        super().__init__()
        self.interval = interval
        self._last: dict[tuple[str, int, str], tuple[float, int]] = {}  # when written, dropped
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, record.levelno, record.getMessage())
        now = time.monotonic()
        with self._lock:
            written, dropped = self._last.get(key, (float("-inf"), 0))
            if now - written < self.interval:
                self._last[key] = (written, dropped + 1)
                return False
            if len(self._last) >= MAX_KINDS:
                self._last.clear()
            self._last[key] = (now, 0)
        if dropped:
            record.msg = f"{record.msg} [{dropped} more like this since the last one written]"
        return True
