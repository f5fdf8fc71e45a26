"""Real parts for tests: a threadsvc server in its own process on a free port, seeded users.

The standard world: administrator `admin`; group `dev` (id 240) with `reviewer`,
`contributor`, `manager` and `approver`; group `other` (id 241) with `othermgr` as manager;
`outsider` belongs to no group. Every password is the username followed by `-pw`.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx

from threadsvc import admin
from threadsvc.settings import load_settings

ROLES = ("reviewer", "contributor", "manager", "approver")
USERS = ("admin", *ROLES, "othermgr", "outsider")


def password(username: str) -> str:
    return f"{username}-pw"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def seed(config: Path) -> dict[str, str]:
    """Create the standard world in the store of `config`; returns an API token per user."""
    settings = load_settings(config, environ={})

    async def main() -> dict[str, str]:
        async with admin.opened(settings) as a:
            for name in USERS:
                await a.identity.add_user(name, password(name), name == "admin")
            await admin.add_group(a, "dev", 240)
            await admin.add_group(a, "other", 241)
            for role in ROLES:
                await admin.add_member(a, "dev", role, role)
            await admin.add_member(a, "other", "othermgr", "manager")
            return {name: await a.identity.new_api_token(name) for name in USERS}

    return anyio.run(main)


class Server:
    """`threadsvc serve` in a subprocess, on the settings file it writes for itself."""

    def __init__(self, directory: Path, **settings: Any) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = directory / "threadsvc.toml"
        values = {
            "db": f"sqlite:///{directory / 'threadsvc.db'}",
            "host": "127.0.0.1",
            "port": self.port,
            "data-dir": str(directory / "data"),
            "secret-key": ["test-secret-key"],
            "shutdown-grace": 1.0,
            **settings,
        }
        self.config.write_text("".join(f"{k} = {_toml(v)}\n" for k, v in values.items()))
        self.process: subprocess.Popen[bytes] | None = None
        self.log = directory / "server.log"

    def start(self, timeout: float = 20.0) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("THREADSVC_")}
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "threadsvc", "serve", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"server did not start: {self.log.read_text()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(timeout)
        self.process = None
        return code

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def client(self, user: str | None = None, **kwargs: Any) -> httpx.Client:
        auth = (user, password(user)) if user else None
        return httpx.Client(base_url=self.url, auth=auth, **{"timeout": 30, **kwargs})


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def running_server(directory: Path, **settings: Any) -> Iterator[tuple[Server, dict[str, str]]]:
    server = Server(directory, **settings)
    tokens = seed(server.config)
    server.start()
    try:
        yield server, tokens
    finally:
        if server.process is not None:
            server.stop()


def wait_for(client: httpx.Client, path: str, predicate: Any, timeout: float = 10.0) -> httpx.Response:
    """Poll `path` until `predicate(response)` holds; returns that response."""
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(path)
        if predicate(response):
            return response
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting on {path}: {response.text[:500]}")
        time.sleep(0.05)


FINAL = ("completed", "failed", "cancelled")
_FINAL_THREAD = re.compile(r'<thread [^>]*status="(' + "|".join(FINAL) + ')"')


def wait_final(client: httpx.Client, tid: str, timeout: float = 60.0,
               group: str = "dev") -> httpx.Response:
    """The progress answer of thread `tid` of `group` once its status is final."""
    return wait_for(client, f"/ps/service/groups/{group}/threads/{tid}/progress",
                    lambda r: bool(_FINAL_THREAD.search(r.text)), timeout)
