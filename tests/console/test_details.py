"""The thread page's details as plain functions: durations, the timeline, parameters shown."""

from __future__ import annotations

import dataclasses

import pytest

from threadsvc.models import Status, Thread
from threadsvc.web.console import details

T0 = 1_764_000_000_000
THREAD = Thread(id="a" * 32, name="n", username="u", group_id=1, job="sleep", params={},
                status=Status.INITIALISED, created=T0)


@pytest.mark.parametrize(("ms", "text"), [
    (-5, "0 ms"), (850, "850 ms"), (1_000, "1 s"), (59_999, "59 s"), (60_000, "1 min"),
    (185_000, "3 min 5 s"), (3_600_000, "1 h"), (7_620_000, "2 h 7 min"),
    (86_400_000, "1 d"), (3 * 86_400_000 + 4 * 3_600_000 + 59_000, "3 d 4 h"),
])
def test_durations_in_two_units_at_most(ms: int, text: str) -> None:
    assert details.duration(ms) == text


def test_a_waiting_thread_queues_so_far_and_has_not_run() -> None:
    assert details.queued(THREAD, T0 + 5_000) == ("5 s", True)
    assert details.ran(THREAD, T0 + 5_000) is None
    assert [s.status for s in details.timeline(THREAD)] == [Status.INITIALISED]


def test_a_finished_thread_queued_then_ran() -> None:
    done = dataclasses.replace(THREAD, status=Status.COMPLETED, started=T0 + 2_000,
                               ended=T0 + 65_000)
    assert details.queued(done, T0 + 10**9) == ("2 s", False)
    assert details.ran(done, T0 + 10**9) == ("1 min 3 s", False)
    steps = details.timeline(done)
    assert [(s.status, s.at) for s in steps] == [
        (Status.INITIALISED, T0), (Status.INPROGRESS, T0 + 2_000), (Status.COMPLETED, T0 + 65_000)]


def test_cancelled_before_it_started_never_queued_to_a_claim() -> None:
    cancelled = dataclasses.replace(THREAD, status=Status.CANCELLED, ended=T0 + 1_000)
    assert details.queued(cancelled, T0 + 10**9) is None
    assert details.ran(cancelled, T0 + 10**9) is None
    last = details.timeline(cancelled)[-1]
    assert (last.status, last.at, last.note) == (Status.CANCELLED, T0 + 1_000, "before it started")


def test_a_running_thread_with_a_warning_or_a_cancel_requested() -> None:
    warned = dataclasses.replace(THREAD, status=Status.WARNING, started=T0 + 1_000)
    assert details.ran(warned, T0 + 4_000) == ("3 s", True)
    assert [(s.status, s.at, s.note) for s in details.timeline(warned)][-1] == (
        Status.WARNING, None, "now")
    stopping = dataclasses.replace(THREAD, status=Status.INPROGRESS, started=T0 + 1_000,
                                   cancel_requested=True)
    assert details.timeline(stopping)[-1].note == "cancel requested"


def test_parameters_show_files_by_name_and_size_and_leave_out_what_was_not_given() -> None:
    shown = details.parameters({
        "seconds": 1.5, "fail": None, "names": ["a", "b"], "none": [],
        "documents": [{"name": "a.xml", "size": 10, "type": "application/xml"},
                      {"name": "b.xml", "size": 2048, "type": "application/xml"}],
        "schema": {"name": "s.xsd", "size": 5, "type": "application/xml"},
    })
    assert shown == [
        details.Shown("documents", None, [("a.xml", "10 bytes"), ("b.xml", "2.0 KiB")]),
        details.Shown("names", "a, b", []),
        details.Shown("schema", None, [("s.xsd", "5 bytes")]),
        details.Shown("seconds", "1.5", []),
    ]
    assert details.parameters(None) is None  # the viewer may not see them
    assert details.parameters({}) == []
