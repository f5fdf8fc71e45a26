"""Schedules against real servers (docs/decisions.md, "Schedules"): a schedule ticking every
second starts exactly one thread per tick, on SQLite and on two PostgreSQL nodes; a refused
start is recorded, not retried; a claim whose node died is taken over; a bad schedule stops the
server at start; `threadsvc schedules list` shows each schedule and its last tick."""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner

from tests.pg import PostgresCluster
from tests.support import Server, seed
from threadsvc.cli import main

pytestmark = pytest.mark.slow

EVERY_SECOND = """
[schedules.tick]
job = "sleep"
group = "dev"
owner = "contributor"
params = {{ seconds = {seconds}, steps = 1 }}
cron = "* * * * * *"
timezone = "Europe/Paris"
"""
TICKS = 3


def _rows(db: str, sql: str) -> list[tuple[Any, ...]]:
    if db.startswith("sqlite:///"):
        with sqlite3.connect(db.removeprefix("sqlite:///")) as conn:
            return list(conn.execute(sql))
    import psycopg

    with psycopg.connect(db) as conn:
        return list(conn.execute(sql))  # type: ignore[arg-type]


def ticks(db: str) -> list[tuple[int, str, str | None, str | None]]:
    """(tick, node, thread_id, outcome) of the schedule `tick`, oldest first."""
    return [tuple(row) for row in _rows(  # type: ignore[misc]
        db, "SELECT tick, node, thread_id, outcome FROM schedule_ticks WHERE name = 'tick' "
            "ORDER BY tick")]


def scheduled_threads(db: str) -> list[tuple[str, str]]:
    """(idempotency key, thread id) of every thread a schedule started."""
    return [(row[0], row[1]) for row in _rows(
        db, "SELECT idempotency_key, id FROM threads WHERE idempotency_key LIKE 'schedule:%'")]


def wait_ticks(db: str, count: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while len([t for t in ticks(db) if t[2] or t[3]]) < count:
        assert time.monotonic() < deadline, f"fewer than {count} ticks: {ticks(db)}"
        time.sleep(0.2)


def assert_one_thread_per_tick(db: str) -> list[tuple[int, str, str | None, str | None]]:
    found = ticks(db)
    assert len(found) >= TICKS
    threads = scheduled_threads(db)
    keys = [key for key, _ in threads]
    assert len(keys) == len(set(keys)), "a tick started more than one thread"
    # every thread is the recorded one of its tick, and every recorded tick has its thread
    by_key = dict(threads)
    recorded = {f"schedule:tick:{tick}": tid for tick, _, tid, _ in found if tid}
    assert recorded == by_key
    assert all(tid is not None for _, _, tid, _ in found[:-1])  # the last may be in flight
    return found


@pytest.fixture
def sqlite_server(tmp_path: Path) -> Iterator[Server]:
    server = Server(tmp_path, EVERY_SECOND.format(seconds=0.1))
    seed(server.config)
    server.start()
    try:
        yield server
    finally:
        if server.running:
            server.stop(signal.SIGKILL)


def test_one_thread_per_tick_on_sqlite(sqlite_server: Server) -> None:
    db = f"sqlite:///{sqlite_server.directory / 'threadsvc.db'}"
    wait_ticks(db, TICKS)
    sqlite_server.stop()
    found = assert_one_thread_per_tick(db)
    assert all(node == found[0][1] for _, node, _, _ in found)
    # the threads are the owner's, in the group, started as they would have started them
    with sqlite3.connect(db.removeprefix("sqlite:///")) as conn:
        owners = set(conn.execute(
            "SELECT username, group_id, job FROM threads WHERE idempotency_key LIKE 'schedule:%'"))
    assert owners == {("contributor", 240, "sleep")}


@pytest.mark.postgres
@pytest.mark.timeout(120)
def test_one_thread_per_tick_across_two_postgresql_nodes(
    tmp_path: Path, postgres: PostgresCluster
) -> None:
    db = postgres.new_database_url()
    nodes = [Server(tmp_path / f"n{i}", EVERY_SECOND.format(seconds=0.1), db=db, node=f"n{i}",
                    **{"lease-timeout": 2})
             for i in (1, 2)]
    seed(nodes[0].config)
    try:
        for node in nodes:
            node.start()
        wait_ticks(db, TICKS)
        nodes[0].kill()  # whatever it had claimed and not started, n2 takes over
        wait_ticks(db, len(ticks(db)) + TICKS)
        deadline = time.monotonic() + 30
        while any(tid is None and outcome is None for _, _, tid, outcome in ticks(db)[:-1]):
            assert time.monotonic() < deadline, ticks(db)
            time.sleep(0.2)
    finally:
        for node in nodes:
            if node.running:
                node.stop()
    found = assert_one_thread_per_tick(db)
    assert {node for _, node, _, _ in found} <= {"n1", "n2"}
    # no tick was lost: one a second from the first to the last, whichever node took it
    seconds = [tick for tick, _, _, _ in found]
    assert seconds == list(range(seconds[0], seconds[-1] + 1, 1000))


def test_a_refused_start_is_recorded_and_not_retried(tmp_path: Path) -> None:
    # one active thread per user: the first tick's thread sleeps, the next ticks are refused
    server = Server(tmp_path, EVERY_SECOND.format(seconds=60), **{"max-active-per-user": 1})
    seed(server.config)
    server.start()
    db = f"sqlite:///{tmp_path / 'threadsvc.db'}"
    try:
        wait_ticks(db, TICKS)
    finally:
        server.stop(signal.SIGKILL)
    found = ticks(db)
    started = [tid for _, _, tid, _ in found if tid]
    refused = [outcome for _, _, _, outcome in found if outcome]
    assert len(started) == 1 and len(scheduled_threads(db)) == 1
    assert len(refused) >= TICKS - 1
    assert all(o.startswith("TooManyActiveThreads: ") for o in refused)
    assert "schedule tick: the tick of" in server.log.read_text()


def test_a_claim_whose_node_died_is_started_by_another(tmp_path: Path) -> None:
    server = Server(tmp_path, EVERY_SECOND.format(seconds=0.1), node="n2")
    seed(server.config)  # the store exists now, with its tables
    now = int(time.time()) * 1000
    lost = now - 20_000  # a tick claimed 60 s ago by a node that died before starting it
    db = server.directory / "threadsvc.db"
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO schedule_ticks (name, tick, node, claimed) "
                     "VALUES ('tick', ?, 'ghost', ?)", (lost, now - 60_000))
    server.start()
    try:
        deadline = time.monotonic() + 20
        while (row := next(t for t in ticks(f"sqlite:///{db}") if t[0] == lost))[2] is None:
            assert time.monotonic() < deadline, row
            time.sleep(0.1)
    finally:
        server.stop(signal.SIGKILL)
    assert row[1] == "n2"
    assert (f"schedule:tick:{lost}", row[2]) in scheduled_threads(f"sqlite:///{db}")


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('job = "sleep"\nowner = "nobody"\ngroup = "dev"\ncron = "* * * * *"',
         "setting 'schedules.bad': owner 'nobody' is not a user"),
        ('job = "sleep"\nowner = "contributor"\ngroup = "nowhere"\ncron = "* * * * *"',
         "setting 'schedules.bad': No group 'nowhere'"),
        ('job = "sleep"\nowner = "contributor"\ncron = "* * * * *"',  # server level: admins
         "setting 'schedules.bad': Only administrators may start server-level threads"),
        ('job = "sleep"\nowner = "reviewer"\ngroup = "dev"\ncron = "* * * * *"',
         "setting 'schedules.bad': Starting threads in group 'dev' needs at least the role"),
        ('job = "sleep"\nowner = "admin"\ngroup = "dev"\ncron = "* * * * *"\n'
         + 'params = { seconds = -1 }', "setting 'schedules.bad': Parameter 'seconds'"),
        ('job = "sleep"\nowner = "admin"\ngroup = "dev"\ncron = "* * * * *"\n'
         + 'params = { naps = 1 }', "setting 'schedules.bad': Parameter 'naps'"),
        ('job = "nosuchjob"\nowner = "admin"\ngroup = "dev"\ncron = "* * * * *"',
         "setting 'schedules.bad': Parameter 'job': no job named 'nosuchjob' here"),
        ('job = "sleep"\nowner = "admin"\ngroup = "dev"\ncron = "every day"',
         "setting 'schedules.bad.cron'"),
    ],
)
def test_a_bad_schedule_stops_the_server_at_start(tmp_path: Path, table: str,
                                                  message: str) -> None:
    server = Server(tmp_path, f"\n[schedules.bad]\n{table}\n")
    seed(server.config)
    with pytest.raises(RuntimeError, match=re.escape(message)):
        server.start()


def test_schedules_list(sqlite_server: Server) -> None:
    db = f"sqlite:///{sqlite_server.directory / 'threadsvc.db'}"
    wait_ticks(db, 1)
    sqlite_server.stop()
    with sqlite_server.config.open("a") as config:  # a schedule that has never ticked
        config.write('\n[schedules.later]\njob = "sleep"\nowner = "admin"\n'
                     'cron = "0 3 * * *"\n')
    runner = CliRunner()
    answer = runner.invoke(main, ["schedules", "list", "--config", str(sqlite_server.config),
                                  "--json"])
    assert answer.exit_code == 0, answer.output
    listed = {row["name"]: row for row in json.loads(answer.stdout)}
    last_tick, _, last_thread, _ = ticks(db)[-1]
    tick = listed["tick"]
    assert {k: tick[k] for k in ("job", "where", "owner", "cron", "timezone", "thread")} == {
        "job": "sleep", "where": "dev", "owner": "contributor", "cron": "* * * * * *",
        "timezone": "Europe/Paris", "thread": last_thread}
    paris = datetime.fromtimestamp(last_tick / 1000, ZoneInfo("Europe/Paris"))
    assert tick["last"] == paris.isoformat(timespec="seconds")  # the schedule's time zone
    assert tick["next"] > tick["last"]
    later = listed["later"]
    assert (later["where"], later["last"], later["thread"]) == ("server", None, None)
    assert later["next"].endswith("T03:00:00+00:00")
    table = runner.invoke(main, ["schedules", "list", "--config", str(sqlite_server.config)])
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["NAME", "JOB", "WHERE", "OWNER", "CRON", "TIMEZONE", "NEXT",
                                "LAST", "THREAD"]
    assert lines[1].startswith("tick ") and lines[1].endswith(last_thread or "?")
    assert lines[2].startswith("later ") and lines[2].split()[-1] == "-"  # as in the file
