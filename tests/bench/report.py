"""The machine, the versions, and docs/performance.md."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import sqlite3
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.bench.common import ROOT, Figure, fmt, wrk_version

NOTES_HEADING = "## Notes"  # everything from this heading on is kept when the file is rewritten


def machine() -> dict[str, str]:
    cpu = "?"
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    return {
        "CPU": cpu,
        "cores": str(os.cpu_count()),
        "memory": mem,
        "system": f"{platform.system()} {platform.release()} ({_os_name()})",
    }


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.platform()


def _dist(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _command_version(args: list[str]) -> str:
    if shutil.which(args[0]) is None:
        return "not installed"
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    return (done.stdout or done.stderr).strip().splitlines()[0] if (done.stdout or done.stderr) else "?"


def versions(postgres: str, peers: dict[str, str]) -> dict[str, str]:
    found = {
        "Python": platform.python_version(),
        "threadsvc": _dist("threadsvc") + _git(),
        "starlette": _dist("starlette"),
        "uvicorn": _dist("uvicorn"),
        "uvicorn's loop and HTTP parser": _uvicorn_impl(),
        "lxml": _dist("lxml"),
        "psycopg": _dist("psycopg"),
        "SQLite": sqlite3.sqlite_version,
        "PostgreSQL": postgres or "not used",
        "wrk": wrk_version(),
    }
    found.update(peers)
    return found


def _uvicorn_impl() -> str:
    """What uvicorn's "auto" picks here: uvloop and httptools when installed ([speed] extra)."""
    loop = f"uvloop {_dist('uvloop')}" if _dist("uvloop") != "not installed" else "asyncio"
    http = f"httptools {_dist('httptools')}" if _dist("httptools") != "not installed" else (
        f"h11 {_dist('h11')}")
    return f"{loop}, {http}"


def _git() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "threadsvc"],
                               cwd=ROOT, capture_output=True, text=True, check=False).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""
    return f" (git {commit}{', with uncommitted changes in threadsvc/' if dirty else ''})"


def markdown(
    figures: list[Figure], info: dict[str, Any], kept_notes: str,
) -> str:
    lines = [
        "# Performance",
        "",
        "Written by the benchmark suite (`tests/bench/`) from one run; run it again with",
        "",
        "```sh",
        info["command"],
        "```",
        "",
        f"**This run**: {info['when']}, `{info['form']}` form, stores: {info['stores']}, "
        f"{info['duration']}. {info['conditions']} {info.get('load', '')}".replace("  ", " "),
        "",
        *([
            ("The quick form runs smaller sizes than the targets name (1,000 threads and "
             "waiters instead of 10,000 and 5,000, 100,000 log events and table rows instead of "
             "1,000,000): its verdicts are indicative; the full form (no `--quick`) is the one "
             "that judges the targets."),
            "",
        ] if info["form"] == "quick" else []),
        "## Machine and versions",
        "",
        "| | |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in info["machine"].items()),
        *(f"| {k} | {v} |" for k, v in info["versions"].items()),
        "",
        "## Figures",
        "",
        "| item | measure | store | value | target | |",
        "|---|---|---|---:|---|---|",
    ]
    for f in in_order(figures):
        value = f"{fmt(f.value)} {f.unit}".strip()
        lines.append(f"| {f.item} | {f.what}{' — ' + f.note if f.note else ''} | {f.store or ''} "
                     f"| {value} | {f.target_text} | {f.verdict} |")
    missed = [f for f in figures if f.verdict == "MISS"]
    passed = [f for f in figures if f.verdict == "PASS"]
    lines += [
        "",
        f"{len(passed)} targets met, {len(missed)} missed"
        + (": " + "; ".join(f"{f.item} {f.what} ({f.store})" for f in missed) if missed else "")
        + ".",
        "",
        "## How each figure is measured",
        "",
        METHOD.strip(),
        "",
    ]
    text = "\n".join(lines)
    if kept_notes:
        text += "\n" + kept_notes.strip() + "\n"
    return text


def in_order(figures: list[Figure]) -> list[Figure]:
    """By item number (they run in another order: the peers last), otherwise as measured."""
    return sorted(figures, key=lambda f: f.item.split()[0] if f.item else "")


def kept_notes(path: Path) -> str:
    if not path.exists():
        return ""
    text = path.read_text()
    at = text.find("\n" + NOTES_HEADING)
    return text[at + 1:] if at >= 0 else ""


def now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


METHOD = """
Every server is a real `threadsvc serve` process (tests/support.py `Server`) on a free port, with
the standard test world seeded (group `dev`, user `contributor` with an API token), the
benchmark jobs of `tests/bench/jobs.py` (`jobs = ["tests.bench.jobs"]`), `max-running = 64`
unless said otherwise, and the active-thread limits lifted. PostgreSQL is a private cluster
started by tests/pg.py (`fsync`, `synchronous_commit` and `full_page_writes` off, as for the
tests); SQLite is a file in WAL mode with `synchronous=NORMAL`, as shipped. Load generators run
in processes of their own.

1. **Polling**: a `hold` thread (progress reported once, then asleep) is polled at
   `GET /ps/service/groups/dev/threads/{id}/progress` with `Authorization: Bearer` (an API
   token of its owner) by `wrk -t1 -c64`. The bare app (`tests/bench/bare.py`) is Starlette with
   one route answering the very bytes and headers threadsvc answered (checked), run by
   `uvicorn.run` with the arguments `threadsvc serve` uses (same loop, HTTP parser, access log).
   The two are measured in turns after a warm-up; the ratio is of requests per second. The ratio
   per CPU-second of the server process (from /proc) is also given: it moves less when other
   processes share the machine.
2. **Starting and finishing**: over HTTP, `wrk -c64` POSTs `job=noop` to
   `/ps/service/groups/dev/threads` for a fixed time; then the clock runs until the group has
   no active thread; threads/s = completed threads / (time from the first POST to the last
   completion). In-process: a child process builds `Service`, `Runner` and the store as
   `create_app` does (no HTTP), starts N no-op threads from 64 concurrent tasks and waits until
   all are completed (`count_by_status`).
3. **Peers**: the same no-op workload (N jobs enqueued from 64 concurrent tasks, a worker in the
   same process with 64 concurrent jobs, timed until all are done) on SAQ (Redis, a private
   `redis-server` on a free port) and on procrastinate (a database of the private PostgreSQL
   cluster), installed only in `tests/bench/.venv-peers`; compared with threadsvc's in-process
   figure on each store.
4. **Many threads**: N `ticker` threads (each reports progress every second, step k due k
   seconds after it started) are started over HTTP with `max-running = N` (each start with an
   Idempotency-Key, so that one sent again after a broken connection starts nothing twice); once all run, a separate process polls
   random threads' progress at a fixed rate (open loop: latency counts from the moment each
   poll was due, so a stalled server is not hidden) while the server's RSS is sampled;
   peak RSS is the server's VmHWM from /proc. Then 50 threads' stored progress is compared
   with their schedule: under 1 s behind means the server keeps up. The queue
   (`tests/bench/queued.py`): a server with `max-running = 4` and N `initialised` threads
   waiting, built two ways: started over HTTP while it runs (one-second tickers: 4 end a
   second, so nearly all still wait; a quarter of N, for time), and written into the stopped store with one SQL
   statement before it starts (no-op threads, all of one user, then each of another user);
   RSS is sampled every 0.2 s while they wait and while the queue drains for a few seconds.
5. **Big logs and big tables**: a `logger` thread logs N events as fast as the context takes
   them; events/s = N / (ended − started) as the thread reports them. The last page of 1,000
   events (`…/logs?since=TOTAL-1000&limit=1000`) is read sequentially over keep-alive;
   median latency. The table: N completed threads inserted with one SQL statement into the
   seeded store before the server starts (SQLite: a recursive CTE; PostgreSQL:
   `generate_series`, then `VACUUM ANALYZE`), with random 32-hex ids, all in group `dev`; then
   `GET …/groups/dev/threads?status=all&page=P` (default page size 100) for P = 1 and 1,000,
   and the last page at page size 1,000, sequentially; median latency. "The same for both
   pages" is read as page 1,000 taking at most 1.5 times as long as page 1.
6. **Long-polls and streams**: N clients (a separate process, raw asyncio sockets) hold either a
   long-poll (`…/progress?wait=60` with `If-None-Match` of the current ETag) or an event stream
   (`…/events`) on one `hold` thread, all as the one user `contributor` (so
   `max-streams-per-user` is raised to 10 N); once every stream has its first status event and the
   server is idle, the thread is cancelled, and each client's wake-up latency is the time from
   sending the cancel to receiving the new state. Target: every client woken within 1 s.
9. **The dashboard**: N threads (10,000) written into the stopped store with one SQL statement,
   created evenly over the last day (a fiftieth still `initialised`, the rest completed,
   failed or cancelled, of four jobs, with waits up to 5 s and run times up to a minute); then
   the administrator signs in to the console and reads `/ps/ui/dashboard` (the last hour, then
   `?window=day`) 22 times each over keep-alive; the figure is the median of the last 20.
   Target: 200 ms.
"""
