"""Pre-signed result links are kept out of the log.

Threat model: a pre-signed result link works without credentials until it expires, so whoever
reads the log (uvicorn's access log, threadsvc's lines that name a request's path) could fetch
the result. No log line keeps one: `/results/TOKEN` is logged as `/results/[redacted]`.
"""

from __future__ import annotations

import logging
import re

_RESULT_TOKEN = re.compile(r"(/results/)[^/?#\s\"]+")


class RedactResultLinks(logging.Filter):
    """`/results/TOKEN` in a record's message or arguments becomes `/results/[redacted]`."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        if not any(isinstance(part, str) and "/results/" in part for part in (record.msg, *args)):
            return True  # the access log of every other request: nothing to look for
        if isinstance(record.msg, str):
            record.msg = _RESULT_TOKEN.sub(r"\1[redacted]", record.msg)
        if isinstance(record.args, tuple):  # uvicorn's access formatter unpacks the args
            record.args = tuple(_RESULT_TOKEN.sub(r"\1[redacted]", arg) if isinstance(arg, str)
                                else arg for arg in record.args)
        return True
