"""3. The peers: the no-op workload on SAQ (Redis) and procrastinate (PostgreSQL), next to
threadsvc's in-process figure on each store, all with the same N and concurrency.

SAQ and procrastinate live only in tests/bench/.venv-peers (made here the first time, pinned);
they are never dependencies of threadsvc. Redis is a private redis-server on a free port.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.bench.common import (
    BENCH,
    ROOT,
    Figure,
    Results,
    Stores,
    run_json,
    say,
    stop_process,
)
from tests.bench.sizes import Sizes
from tests.support import free_port

ITEM = "3 peers"
VENV = BENCH / ".venv-peers"
PEERS = ["saq[redis,postgres]==0.26.4", "procrastinate==3.10.0"]
CONCURRENCY = 64


def peer_python() -> Path:
    python = VENV / "bin" / "python"
    probe = "import saq, procrastinate, redis, psycopg_pool"
    if python.exists() and subprocess.run([str(python), "-c", probe],
                                          capture_output=True, check=False).returncode == 0:
        return python
    say(f"  making {VENV.relative_to(ROOT)} with {', '.join(PEERS)}")
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *PEERS], check=True)
    return python


def peer_versions(python: Path) -> dict[str, str]:
    code = ("import importlib.metadata as m, redis; "
            "print(m.version('saq'), m.version('procrastinate'), redis.__version__)")
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=False).stdout.split()
    server = shutil.which("redis-server")
    redis_server = ""
    if server:
        text = subprocess.run([server, "--version"], capture_output=True, text=True, check=False).stdout
        redis_server = next((p.split("=")[1] for p in text.split() if p.startswith("v=")), "?")
    found = {"SAQ": out[0], "procrastinate": out[1], "Redis": redis_server or "not installed"}
    return found if len(out) == 3 else {}


class Redis:
    def __init__(self, directory: Path) -> None:
        server = shutil.which("redis-server")
        if server is None:
            raise RuntimeError("redis-server is needed (Debian: apt-get install redis-server)")
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        with open(directory / "redis.log", "ab") as log:
            self.process = subprocess.Popen(
                [server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(directory), "--protected-mode", "no"],
                stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        stop_process(self.process)


def run(results: Results, stores: Stores, sizes: Sizes, work: Path) -> dict[str, str]:
    python = peer_python()
    versions = peer_versions(python)
    n = sizes.peer_jobs
    rates: dict[tuple[str, str], float] = {}
    for store in stores.names:
        directory = work / f"peers-threadsvc-{store}"
        out = run_json(
            [sys.executable, "-m", "tests.bench.inproc", stores.url(store, directory),
             str(directory / "data"), str(n), str(CONCURRENCY), str(CONCURRENCY)],
            timeout=1800,
        )
        rates[("threadsvc", store)] = out["rate"]
        results.add(Figure(ITEM, "threadsvc in-process: no-op jobs/s", store, out["rate"],
                           "jobs/s", note=f"{n:,} jobs, starts alone {out['start_rate']:,.0f}/s"))
    redis = Redis(work / "redis")
    try:
        out = run_json([str(python), str(BENCH / "peer_saq.py"), redis.url, str(n),
                        str(CONCURRENCY)], timeout=1800, env=None)
    finally:
        redis.stop()
    rates[("SAQ", "redis")] = out["rate"]
    results.add(Figure(ITEM, "SAQ: no-op jobs/s", "redis", out["rate"], "jobs/s",
                       note=f"{n:,} jobs, enqueues alone {out['enqueue_rate']:,.0f}/s"))
    if "postgres" in stores.names:
        out = run_json([str(python), str(BENCH / "peer_procrastinate.py"),
                        stores.cluster.new_database(), str(n), str(CONCURRENCY)],
                       timeout=1800, env=None)
        rates[("procrastinate", "postgres")] = out["rate"]
        results.add(Figure(ITEM, "procrastinate: no-op jobs/s", "postgres", out["rate"],
                           "jobs/s",
                           note=f"{n:,} jobs, defers alone {out['enqueue_rate']:,.0f}/s"))
        try:
            out = run_json([str(python), str(BENCH / "peer_saq.py"),
                            stores.cluster.new_database_url(), str(n), str(CONCURRENCY)],
                           timeout=1800, env=None)
            results.add(Figure(ITEM, "SAQ on PostgreSQL (for comparison): no-op jobs/s",
                               "postgres", out["rate"], "jobs/s",
                               note=f"{n:,} jobs, enqueues alone {out['enqueue_rate']:,.0f}/s"))
        except RuntimeError as exc:
            say(f"  SAQ on PostgreSQL failed: {str(exc)[:300]}")
    for (name, where), rate in rates.items():
        if name != "threadsvc":
            continue
        for (peer, peer_store), peer_rate in rates.items():
            if peer == "threadsvc":
                continue
            results.add(Figure(ITEM, f"threadsvc ({where}) / {peer} ({peer_store})", where,
                               rate / peer_rate, "×", target=1.0))
    return versions
