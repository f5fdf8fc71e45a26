"""What every benchmark shares: figures, real servers, wrk, /proc, the stores.

Nothing here is collected by pytest (no test_*.py file in this folder).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from tests.support import Server, free_port, seed

ROOT = Path(__file__).resolve().parents[2]
BENCH = Path(__file__).resolve().parent
GROUP = "dev"  # the standard world of tests/support.py: group dev (240), user contributor
USER = "contributor"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- figures ------------------------------------------------------------------------------------
@dataclass
class Figure:
    item: str  # "1 polling", ...
    what: str
    store: str  # "sqlite", "postgres", "redis", or "" where no store is involved
    value: float | None  # None: not measured (the note says why)
    unit: str
    target: float | None = None
    higher_is_better: bool = True
    note: str = ""

    @property
    def verdict(self) -> str:
        if self.target is None:
            return ""
        if self.value is None:
            return "MISS"
        ok = self.value >= self.target if self.higher_is_better else self.value <= self.target
        return "PASS" if ok else "MISS"

    @property
    def target_text(self) -> str:
        if self.target is None:
            return ""
        return ("≥ " if self.higher_is_better else "≤ ") + fmt(self.target)


def fmt(value: float | None) -> str:
    if value is None:
        return "—"
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


@dataclass
class Results:
    figures: list[Figure] = field(default_factory=list)
    log: list[str] = field(default_factory=list)

    def add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        verdict = f"  [{figure.target_text}: {figure.verdict}]" if figure.target is not None else ""
        note = f"  ({figure.note})" if figure.note else ""
        say(f"  {figure.item} | {figure.what} | {figure.store or '-'}: "
            f"{fmt(figure.value)} {figure.unit}{verdict}{note}")
        return figure

    def to_json(self) -> list[dict[str, Any]]:
        return [{**asdict(f), "verdict": f.verdict} for f in self.figures]


def say(text: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {text}", flush=True)


# -- the process ---------------------------------------------------------------------------------
def raise_open_files(wanted: int = 65536) -> int:
    """Raise this process's open-file limit (children inherit it); the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        if os.geteuid() == 0 and hard != resource.RLIM_INFINITY and hard < wanted:
            with contextlib.suppress(ValueError, OSError):  # root may raise the hard limit too
                resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def python_env() -> dict[str, str]:
    """The environment for benchmark subprocesses: the project importable (tests.bench.jobs)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("THREADSVC_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


# -- /proc ---------------------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process, all its threads, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in bytes."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) * 1024
    return found


def wait_idle(pid: int, quiet: float = 0.05, window: float = 0.5, limit: float = 60.0) -> float:
    """Wait until the process uses less than `quiet` of a CPU over `window` s; seconds waited."""
    start = time.monotonic()
    before = cpu_seconds(pid)
    while time.monotonic() - start < limit:
        time.sleep(window)
        now = cpu_seconds(pid)
        if now - before < quiet * window:
            break
        before = now
    return time.monotonic() - start


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


# -- servers -------------------------------------------------------------------------------------
BENCH_SETTINGS: dict[str, Any] = {
    "jobs": ["tests.bench.jobs"],
    "max-running": 64,
    "max-active-per-user": 1_000_000_000,
    "max-active-per-group": 1_000_000_000,
    "purge-interval": 86_400.0,
    "shutdown-grace": 1.0,
}


class BenchServer(Server):
    """A threadsvc server for benchmarks: tests/support.py's Server with the benchmark jobs,
    no active-thread limits, and the project importable."""

    def __init__(self, directory: Path, db: str, **settings: Any) -> None:
        super().__init__(directory, **{**BENCH_SETTINGS, "db": db, **settings})

    def start(self, timeout: float = 60.0) -> None:
        saved = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = python_env()["PYTHONPATH"]
        try:
            super().start(timeout)
        finally:
            if saved is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = saved

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def halt(self, timeout: float = 20.0) -> None:
        """Stop it; kill it when it takes longer than `timeout` (a benchmark's state is
        thrown away)."""
        if self.process is None:
            return
        try:
            self.stop(signal.SIGTERM, timeout)
        except subprocess.TimeoutExpired:
            say(f"  server did not stop within {timeout:.0f} s; killing it")
            assert self.process is not None
            self.process.kill()
            self.process.wait()
            self.process = None

    def bearer(self, token: str, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}", **kwargs.pop("headers", {})}
        return httpx.Client(base_url=self.url, headers=headers, **{"timeout": 60, **kwargs})


@contextlib.contextmanager
def bench_server(
    directory: Path, db: str, before_start: Callable[[BenchServer], None] | None = None,
    **settings: Any,
) -> Iterator[tuple[BenchServer, dict[str, str]]]:
    """A seeded, started server (the standard world of tests/support.py); `before_start` runs
    on the seeded store before the server starts (to fill tables)."""
    server = BenchServer(directory, db, **settings)
    tokens = seed(server.config)
    if before_start is not None:
        before_start(server)
    server.start()
    try:
        yield server, tokens
    finally:
        server.halt()


def group_path(thread_id: str = "", suffix: str = "") -> str:
    base = f"/ps/service/groups/{GROUP}/threads"
    return f"{base}/{thread_id}{suffix}" if thread_id else base


def start_thread(client: httpx.Client, job: str, **params: Any) -> dict[str, Any]:
    response = client.post(
        group_path(), data={"job": job, **{k: str(v) for k, v in params.items()}},
        headers={"Accept": "application/json"},
    )
    if response.status_code != 202:
        raise RuntimeError(f"start {job}: {response.status_code} {response.text[:300]}")
    thread: dict[str, Any] = response.json()["thread"]
    return thread


def get_thread(client: httpx.Client, thread_id: str) -> dict[str, Any]:
    response = client.get(group_path(thread_id, "/progress"), headers={"Accept": "application/json"})
    response.raise_for_status()
    thread: dict[str, Any] = response.json()["thread"]
    return thread


def wait_thread(
    client: httpx.Client, thread_id: str, predicate: Callable[[dict[str, Any]], bool],
    timeout: float = 600.0, interval: float = 0.2,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        thread = get_thread(client, thread_id)
        if predicate(thread):
            return thread
        if time.monotonic() > deadline:
            raise TimeoutError(f"thread {thread_id}: {thread}")
        time.sleep(interval)


def count(client: httpx.Client, status: str) -> int:
    """How many threads of the group have `status` (a docs/api.md#lists status list)."""
    response = client.get(
        group_path(), params={"status": status, "pagesize": 1},
        headers={"Accept": "application/json"},
    )
    response.raise_for_status()
    return int(response.json()["total"])


def epoch(iso_text: str) -> float:
    return datetime.fromisoformat(iso_text).timestamp()


def latency_stats(samples: list[float]) -> dict[str, float]:
    """p50, p95, p99 and max of latencies in seconds, as milliseconds."""
    if not samples:
        return {"n": 0, "p50": float("nan"), "p95": float("nan"), "p99": float("nan"),
                "max": float("nan")}
    ordered = sorted(samples)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] * 1000

    return {"n": len(ordered), "p50": pct(50), "p95": pct(95), "p99": pct(99),
            "max": ordered[-1] * 1000}


# -- stores --------------------------------------------------------------------------------------
class Stores:
    """Fresh store URLs: SQLite files, and databases of one private PostgreSQL cluster."""

    def __init__(self, names: list[str], work: Path) -> None:
        self.names = names
        self.work = work
        self.cluster: Any = None
        if "postgres" in names:
            from tests.pg import PostgresCluster, unavailable

            reason = unavailable()
            if reason is not None:
                raise SystemExit(f"--store postgres: {reason}")
            say("starting a private PostgreSQL cluster (tests/pg.py)")
            self.cluster = PostgresCluster.from_environment()

    def url(self, store: str, directory: Path) -> str:
        if store == "sqlite":
            directory.mkdir(parents=True, exist_ok=True)
            return f"sqlite:///{directory / 'threadsvc.db'}"
        assert self.cluster is not None
        url: str = self.cluster.new_database_url()
        return url

    def postgres_version(self) -> str:
        if self.cluster is None:
            return ""
        import psycopg

        with psycopg.connect(self.cluster.dsn) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        return str(row[0]) if row else ""

    def close(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()
            self.cluster = None


def workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="threadsvc-bench-"))


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


# -- wrk -----------------------------------------------------------------------------------------
WRK_SCRIPT = r"""
wrk.method = os.getenv("WRK_METHOD") or "GET"
local body = os.getenv("WRK_BODY")
if body and body ~= "" then
  wrk.body = body
  wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
end
done = function(summary, latency, requests)
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, ' ..
    '"status": %d, "timeout": %d, "p50_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.status, summary.errors.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""


def wrk_path() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise SystemExit("wrk is needed (Debian: apt-get install wrk)")
    return found


def wrk(
    url: str, *, seconds: float, connections: int = 64, threads: int = 1,
    headers: dict[str, str] | None = None, method: str = "GET", body: str = "",
) -> dict[str, Any]:
    """Run wrk against `url`; its summary: requests, duration_us, errors, latencies, codes."""
    script = Path(tempfile.gettempdir()) / f"threadsvc-bench-{os.getpid()}.lua"
    if not script.exists():
        script.write_text(WRK_SCRIPT)
        atexit.register(script.unlink, missing_ok=True)
    args = [wrk_path(), f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s",
            "--timeout", "30s", "-s", str(script)]
    for name, value in (headers or {}).items():
        args += ["-H", f"{name}: {value}"]
    env = {**os.environ, "WRK_METHOD": method, "WRK_BODY": body}
    done = subprocess.run([*args, url], capture_output=True, text=True, env=env,
                          timeout=seconds + 120, check=False)
    for line in done.stdout.splitlines():
        if line.startswith("WRKJSON "):
            summary: dict[str, Any] = json.loads(line[len("WRKJSON "):])
            summary["rate"] = summary["requests"] / (summary["duration_us"] / 1e6)
            summary["ok"] = summary["requests"] - summary["status"]  # 2xx and 3xx answers
            return summary
    raise RuntimeError(f"wrk said: {done.stdout}\n{done.stderr}")


def wrk_version() -> str:
    path = shutil.which("wrk")
    if path is None:
        return "not installed"
    done = subprocess.run([path, "-v"], capture_output=True, text=True, check=False)
    first = (done.stdout or done.stderr).strip().splitlines()
    return first[0].split("[")[0].strip() if first else "?"


def run_json(args: list[str], timeout: float, **kwargs: Any) -> dict[str, Any]:
    """Run a Python helper that prints one JSON object as its last stdout line."""
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout,
                          env=kwargs.pop("env", python_env()), cwd=ROOT, **kwargs, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(args[:4])} failed ({done.returncode}):\n"
                           f"{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def start_bare(directory: Path, response: dict[str, Any], stack: str = "auto",
               access_log: bool = False) -> tuple[subprocess.Popen[bytes], str]:
    """The bare Starlette app (tests/bench/bare.py) answering `response` on `stack`, with or
    without uvicorn's access log; (process, url)."""
    spec = directory / "bare-response.json"
    spec.write_text(json.dumps(response))
    port = free_port()
    with open(directory / "bare.log", "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.bench.bare", str(port), str(spec), stack,
             "on" if access_log else "off"],
            stdout=log, stderr=subprocess.STDOUT, env=python_env(), cwd=ROOT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"bare app exited: {(directory / 'bare.log').read_text()[-2000:]}")
        try:
            httpx.get(f"{url}/ps/service/threads/x/progress", timeout=1)
            return process, url
        except httpx.HTTPError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("bare app did not start")


def stop_process(process: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def fill_store(server: BenchServer, sqlite_sql: str, postgres_sql: str,
               args: dict[str, Any]) -> float:
    """Run one filling statement on the server's (seeded, stopped) store, in the dialect of its
    `db`; seconds taken."""
    t0 = time.monotonic()
    db = server.config.read_text().split("db = ", 1)[1].splitlines()[0].strip('"')
    if db.startswith("sqlite:///"):
        import sqlite3

        conn = sqlite3.connect(db.removeprefix("sqlite:///"), isolation_level=None)
        try:
            conn.execute("BEGIN")
            conn.execute(sqlite_sql, args)
            conn.execute("COMMIT")
        finally:
            conn.close()
    else:
        import psycopg

        with psycopg.connect(db, autocommit=True) as pg:
            # A node refuses a store holding threads but no record of where its files are
            # (files/migrate.py): record the storage this server is configured with.
            pg.execute("INSERT INTO server_settings (key, value) VALUES ('files', 'postgres')"
                       " ON CONFLICT (key) DO NOTHING")
            pg.execute(postgres_sql, args)
            pg.execute("VACUUM ANALYZE threads")
    return time.monotonic() - t0
