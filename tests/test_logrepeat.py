"""Repeated warnings are written at most once an interval, with a count; lines that say
different things (failed sign-ins of other names, other counts) are all written."""

from __future__ import annotations

import logging
import time

from threadsvc.logrepeat import RepeatLimit


def record(message: str, *args: object, level: int = logging.WARNING) -> logging.LogRecord:
    return logging.LogRecord("threadsvc.test", level, __file__, 1, message, args, None)


def test_identical_lines_are_limited_and_counted() -> None:
    limit = RepeatLimit(interval=0.2)
    passed = [limit.filter(record("accept failed: %s", "Too many open files")) for _ in range(50)]
    assert passed == [True] + [False] * 49
    time.sleep(0.25)
    later = record("accept failed: %s", "Too many open files")
    assert limit.filter(later)
    assert later.getMessage().endswith("[49 more like this since the last one written]")


def test_lines_that_differ_are_all_written() -> None:
    limit = RepeatLimit(interval=60)
    lines = [record("failed sign-in for %r from %s (%d of %d)", "manager", "10.0.0.1", n, 5)
             for n in range(1, 6)]
    lines.append(record("failed sign-in for %r from %s (%d of %d)", "other", "10.0.0.2", 1, 5))
    assert all(limit.filter(line) for line in lines)


def test_information_is_never_limited() -> None:
    limit = RepeatLimit(interval=60)
    assert all(limit.filter(record("GET /health", level=logging.INFO)) for _ in range(10))
