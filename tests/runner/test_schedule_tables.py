"""The `[schedules.NAME]` tables (runner/schedules.py): their shape is checked whole, ticks come
from the cron expression in the schedule's time zone, and a restart runs a tick it just missed."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from threadsvc.runner.schedules import MISSED_GRACE_MS, Schedule, _first_due, parse_schedules
from threadsvc.settings import SettingsError, load_settings

GOOD = {"job": "sleep", "owner": "alice", "cron": "*/5 * * * *"}


def ms(text: str, zone: str = "UTC") -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone)).timestamp() * 1000)


@pytest.mark.parametrize(
    ("table", "where"),
    [
        ({"owner": "alice", "cron": "* * * * *"}, "schedules.s.job"),
        ({"job": "sleep", "cron": "* * * * *"}, "schedules.s.owner"),
        ({"job": "sleep", "owner": "alice"}, "schedules.s.cron"),
        ({**GOOD, "cron": "61 * * * *"}, "schedules.s.cron"),
        ({**GOOD, "cron": "* * * *"}, "schedules.s.cron"),
        ({**GOOD, "cron": "0 0 30 2 *"}, "schedules.s.cron"),  # never comes
        ({**GOOD, "cron": 5}, "schedules.s.cron"),
        ({**GOOD, "timezone": "Mars/Olympus"}, "schedules.s.timezone"),
        ({**GOOD, "timezone": "../../etc/passwd"}, "schedules.s.timezone"),
        ({**GOOD, "group": ""}, "schedules.s.group"),
        ({**GOOD, "params": "seconds=1"}, "schedules.s.params"),
        ({**GOOD, "params": {"seconds": {"a": 1}}}, "schedules.s.params.seconds"),
        ({**GOOD, "every": "day"}, "schedules.s.every"),
        ("sleep", "schedules.s"),
    ],
)
def test_bad_schedules_name_the_schedule_and_key(table: Any, where: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(f"setting '{where}'")):
        parse_schedules({"s": table})


def test_a_bad_schedule_name_is_refused() -> None:
    with pytest.raises(SettingsError, match="schedule name"):
        parse_schedules({"no spaces": GOOD})


def test_a_good_table_from_the_settings_file(tmp_path: Any) -> None:
    config = tmp_path / "threadsvc.toml"
    config.write_text(
        '[schedules.nightly]\njob = "sleep"\ngroup = "dev"\nowner = "alice"\n'
        'params = { seconds = 1.5, steps = 3, flag = true, many = ["a", "b"] }\n'
        'cron = "0 3 * * MON-FRI"\ntimezone = "Europe/Paris"\n'
        '[schedules.server-wide]\njob = "sleep"\nowner = "admin"\ncron = "0 * * * * *"\n'
    )
    # the tables come from the file only: no THREADSVC_SCHEDULES variable is read
    settings = load_settings(config, environ={"THREADSVC_SCHEDULES": "x"})
    found = parse_schedules(settings.schedules)
    nightly, wide = found["nightly"], found["server-wide"]
    assert (nightly.job, nightly.group, nightly.owner, nightly.where) == (
        "sleep", "dev", "alice", "dev")
    assert nightly.params == (("seconds", "1.5"), ("steps", "3"), ("flag", "true"),
                              ("many", "a"), ("many", "b"))
    assert (wide.group, wide.where, wide.timezone, wide.params) == (None, "server", "UTC", ())


def test_ticks_follow_the_time_zone() -> None:
    paris = Schedule("s", "sleep", None, "alice", (), "0 3 * * *", "Europe/Paris")
    # 03:00 in Paris is 02:00 UTC in winter, 01:00 UTC in summer
    assert paris.next_after(ms("2026-01-10T12:00:00")) == ms("2026-01-11T02:00:00")
    assert paris.next_after(ms("2026-07-10T12:00:00")) == ms("2026-07-11T01:00:00")
    assert paris.shown(ms("2026-07-11T01:00:00")) == "2026-07-11T03:00:00+02:00"


def test_ticks_across_daylight_saving_changes() -> None:
    # 02:30 does not exist in Paris on 29 March 2026: the tick comes at 03:00, once
    skipped = Schedule("s", "sleep", None, "alice", (), "30 2 * * *", "Europe/Paris")
    start = ms("2026-03-29T00:00:00", "Europe/Paris")
    first = skipped.next_after(start)
    assert first is not None and skipped.shown(first) == "2026-03-29T03:00:00+02:00"
    second = skipped.next_after(first)
    assert second is not None and skipped.shown(second) == "2026-03-30T02:30:00+02:00"
    # 02:30 comes twice on 25 October 2026: a daily schedule ticks once
    repeated = Schedule("s", "sleep", None, "alice", (), "30 2 * * *", "Europe/Paris")
    ticks = []
    tick: int | None = ms("2026-10-24T12:00:00", "Europe/Paris")
    for _ in range(2):
        assert tick is not None
        tick = repeated.next_after(tick)
        ticks.append(repeated.shown(tick))
    assert ticks == ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]


def test_seconds_and_the_latest_tick() -> None:
    every_second = Schedule("s", "sleep", None, "alice", (), "* * * * * *")
    assert every_second.next_after(5_000) == 6_000
    assert every_second.next_after(5_400) == 6_000
    assert every_second.latest_at(5_000) == 5_000  # a tick at `now` is due now
    assert every_second.latest_at(5_999) == 5_000


def test_a_restart_runs_the_tick_it_just_missed_and_skips_older_ones() -> None:
    hourly = Schedule("s", "sleep", None, "alice", (), "0 * * * *")
    tick = ms("2026-01-10T12:00:00")
    assert _first_due(hourly, tick + MISSED_GRACE_MS) == tick  # a restart: run it late, once
    assert _first_due(hourly, tick + MISSED_GRACE_MS + 1) == tick + 3_600_000  # skipped
