"""What the access log costs: a standalone script, not one of run.py's items (its figures go by
hand into docs/performance.md's Notes).

1. In-process: CPU µs a request of the access log alone, around an app that answers at once:
   uvicorn's access logger (its formatter and a file handler, with threadsvc's filters, as
   `serve` had it) against threadsvc's `AccessLog` middleware (text and JSON, the writer
   thread's time included); best of five.
2. With `--before DIR` (a checkout of threadsvc from before its own access log, e.g.
   `git archive 6074d92 | tar -x -C DIR`): wrk against real servers on one SQLite store,
   `GET /health` and an authenticated progress poll, for the code in DIR (uvicorn's access log)
   and for this code with `log-format` text, json, and `log-level = "warning"` (no access
   log), round after round; requests a second, p99, and the server's CPU µs a request.
   `--python` picks the interpreter (a venv with the `speed` extra for uvloop and httptools).

    python -m tests.bench.access_log [--before DIR] [--python PY] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import logging
import logging.config
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.support import GROUP, free_port, seed, start

HERE = Path(__file__).resolve().parents[2]
REQUESTS = 50_000
PATH = "/ps/service/groups/dev/threads/0123456789abcdef0123456789abcdef/progress"
SCOPE = {
    "type": "http", "method": "GET", "path": PATH, "raw_path": PATH.encode(), "query_string": b"",
    "headers": [(b"host", b"127.0.0.1:8080"), (b"user-agent", b"wrk"),
                (b"authorization", b"Bearer " + b"x" * 40)],
    "client": ("127.0.0.1", 50000), "http_version": "1.1",
}


async def _app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/xml")]})
    await send({"type": "http.response.body", "body": b"x" * 300})


async def _receive() -> dict[str, Any]:
    return {"type": "http.request"}


def _reset_logging() -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for name in ("uvicorn", "uvicorn.access", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers = []
        logger.propagate = True


def _uvicorn_log(out: Path) -> float:
    from uvicorn.config import LOGGING_CONFIG

    from threadsvc.logredact import RedactResultLinks
    from threadsvc.logrepeat import RepeatLimit

    _reset_logging()
    config = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {"redact": {"()": RedactResultLinks}, "repeat": {"()": RepeatLimit}}
    for handler in config["handlers"].values():
        handler.pop("stream")
        handler.update({"filters": ["redact", "repeat"], "class": "logging.FileHandler",
                        "filename": str(out)})
    logging.config.dictConfig(config)
    log = logging.getLogger("uvicorn.access")

    async def main() -> None:
        for _ in range(REQUESTS):
            status = 0

            async def send(message: Any) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]

            await _app(dict(SCOPE), _receive, send)
            log.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:50000", "GET", PATH, "1.1", status)

    began = time.process_time()
    asyncio.run(main())
    return time.process_time() - began


def _own_log(out: Path, log_format: str) -> float:
    from threadsvc import logs
    from threadsvc.settings import Settings
    from threadsvc.web.access import AccessLog

    _reset_logging()
    with open(out, "w") as stream:
        writer = logs.setup(Settings(log_format=log_format), stream)
        middleware = AccessLog(_app)

        async def send(message: Any) -> None:
            pass

        async def main() -> None:
            for _ in range(REQUESTS):
                await middleware(dict(SCOPE), _receive, send)

        began = time.process_time()
        asyncio.run(main())
        writer.close()  # every line written
        return time.process_time() - began


def in_process(directory: Path) -> None:
    cases: dict[str, Callable[[], float]] = {
        "uvicorn's access log": lambda: _uvicorn_log(directory / "uvicorn.log"),
        "AccessLog, text": lambda: _own_log(directory / "own.log", "text"),
        "AccessLog, json": lambda: _own_log(directory / "own.log", "json"),
    }
    for name, case in cases.items():
        best = min(case() for _ in range(5))
        print(f"{name:22} {best / REQUESTS * 1e6:6.1f} µs of CPU a request (best of 5)")
    _reset_logging()


# -- real servers --------------------------------------------------------------------------

def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wrk(url: str, pid: int, token: str | None = None) -> str:
    before = _cpu_seconds(pid)
    command = ["wrk", "-t1", "-c16", "-d4s", "--latency"]
    if token:
        command += ["-H", f"Authorization: Bearer {token}"]
    out = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+([\d.]+\w+)", out).group(1)  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    cpu = (_cpu_seconds(pid) - before) / total * 1e6
    return f"{rate:8.0f}/s p99 {p99:>8} {cpu:5.0f} µs CPU"


def _serve(root: Path, name: str, code: Path, python: str, extra: dict[str, str]
           ) -> tuple[subprocess.Popen[bytes], str]:
    directory = root / re.sub(r"\W+", "-", name)
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    settings = {"db": f'"sqlite:///{root}/threadsvc.db"', "port": str(port),
                "data-dir": f'"{root}/data"', "secret-key": '["bench-access-log-key"]',
                "shutdown-grace": "1", **extra}
    config = directory / "threadsvc.toml"
    config.write_text("".join(f"{k} = {v}\n" for k, v in settings.items()))
    env = {k: v for k, v in os.environ.items() if not k.startswith("THREADSVC_")}
    env["PYTHONPATH"] = str(code)
    with open(directory / "server.log", "ab") as log:
        process = subprocess.Popen([python, "-m", "threadsvc", "serve", "--config", str(config)],
                                   stdout=log, stderr=subprocess.STDOUT, env=env, cwd=code)
    url = f"http://127.0.0.1:{port}"
    for _ in range(400):
        try:
            if httpx.get(f"{url}/health").status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    process.kill()
    raise RuntimeError((directory / "server.log").read_text()[-2000:])


def servers(root: Path, before: Path, python: str, rounds: int) -> None:
    variants = {
        "uvicorn's access log (before)": (before, {}),
        "AccessLog, text": (HERE, {}),
        "AccessLog, json": (HERE, {"log-format": '"json"'}),
        "no access log (warning)": (HERE, {"log-level": '"warning"'}),
    }
    config = root / "seed.toml"
    config.write_text(f'db = "sqlite:///{root}/threadsvc.db"\ndata-dir = "{root}/data"\n'
                      'secret-key = ["bench-access-log-key"]\n')
    token = seed(config)["contributor"]
    for round_ in range(rounds):
        for name, (code, extra) in variants.items():
            process, url = _serve(root, name, code, python, extra)
            try:
                with httpx.Client(base_url=url,
                                  headers={"Authorization": f"Bearer {token}"}) as http:
                    thread = start(http, seconds="3600")
                _wrk(f"{url}/health", process.pid)  # warm-up
                health = _wrk(f"{url}/health", process.pid)
                poll = _wrk(f"{url}{GROUP}/threads/{thread}/progress", process.pid, token)
            finally:
                process.terminate()
                process.wait(30)
            print(f"{round_} {name:30} health {health} | poll {poll}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", type=Path, help="a checkout with uvicorn's access log")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-access-log-") as tmp:
        in_process(Path(tmp))
        if args.before is not None:
            servers(Path(tmp), args.before.resolve(), args.python, args.rounds)


if __name__ == "__main__":
    main()
