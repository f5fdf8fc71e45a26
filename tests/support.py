"""Real parts for tests: a threadsvc server in its own process on a free port, seeded users,
the helpers that start threads and wait on them, and peers on 127.0.0.1 for the server to reach
(a TCP `Listener` that must never hear from it, a webhook `Receiver`).

The standard world: administrator `admin`; group `dev` (id 240) with `reviewer`,
`contributor`, `manager` and `approver`; group `other` (id 241) with `othermgr` as manager;
`outsider` belongs to no group. Every password is the username followed by `-pw`.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

import anyio
import httpx
from anyio.from_thread import BlockingPortal, start_blocking_portal
from lxml import etree

from threadsvc import admin
from threadsvc.app import create_app
from threadsvc.settings import load_settings

GROUP = "/ps/service/groups/dev"
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

    def __init__(self, directory: Path, config_tail: str = "", **settings: Any) -> None:
        """Settings as in threadsvc.toml (names with dashes); `config_tail` is written after
        them (tables such as [commands.NAME])."""
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
            "secret-key": ["test-secret-key-of-the-test-servers"],
            "shutdown-grace": 1.0,
            **settings,
        }
        self.config.write_text(
            "".join(f"{k} = {_toml(v)}\n" for k, v in values.items()) + config_tail)
        self.process: subprocess.Popen[bytes] | None = None
        self.log = directory / "server.log"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "threadsvc", "serve", "--config", str(self.config)]

    def start(self, timeout: float = 20.0) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("THREADSVC_")}
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                self.command(),
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

    @property
    def running(self) -> bool:
        return self.process is not None

    def client(self, user: str | None = None, **kwargs: Any) -> httpx.Client:
        """A client signed in as `user` with Basic (or as `kwargs` say)."""
        return httpx.Client(base_url=self.url, **self._options(user, kwargs))

    @staticmethod
    def _options(user: str | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        return {"auth": (user, password(user)) if user else None, "timeout": 30, **kwargs}


class InProcess(Server):
    """The app of `create_app` in this process, its lifespan run on an event loop of its own
    (an anyio portal); clients reach it through `httpx.ASGITransport`, with no port and no
    process to start. For tests of what the app answers that need neither the network (the
    proxy headers, slow clients, connection limits of uvicorn) nor a process to signal."""

    def __init__(self, directory: Path, config_tail: str = "", **settings: Any) -> None:
        super().__init__(directory, config_tail, **settings)
        self.url = "http://127.0.0.1"
        self._stack: contextlib.ExitStack | None = None

    def start(self, timeout: float = 20.0) -> None:
        app = create_app(load_settings(self.config, environ={}))
        with contextlib.ExitStack() as stack:
            self.portal = stack.enter_context(start_blocking_portal())
            stack.enter_context(self.portal.wrap_async_context_manager(
                app.router.lifespan_context(app)))
            self.transport = _PortalTransport(self.portal, httpx.ASGITransport(app))
            self._stack = stack.pop_all()

    @property
    def running(self) -> bool:
        return self._stack is not None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        assert self._stack is not None
        self._stack.close()
        self._stack = None
        return 0

    def client(self, user: str | None = None, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, transport=self.transport,
                            **self._options(user, kwargs))


class Clock:
    """threadsvc's clock (`threadsvc.models.wall_clock_ns`) moved on by hand: an `InProcess`
    server's rules (TTLs, lockouts, retention) see the time pass without the wait. conftest's
    `clock` fixture puts it in place for one test."""

    def __init__(self) -> None:
        self.ahead_ns = 0
        self.stopped_at: int | None = None

    def __call__(self) -> int:
        now = time.time_ns() if self.stopped_at is None else self.stopped_at
        return now + self.ahead_ns

    def stop(self) -> None:
        """Time stands still from now on, but for `advance`."""
        self.stopped_at = time.time_ns()

    def advance(self, seconds: float) -> None:
        self.ahead_ns += int(seconds * 1_000_000_000)


class _PortalTransport(httpx.BaseTransport):
    """A synchronous transport over `httpx.ASGITransport`, run on the app's portal."""

    def __init__(self, portal: BlockingPortal, inner: httpx.ASGITransport) -> None:
        self.portal, self.inner = portal, inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()  # a sync stream: read here, sent as bytes on the app's loop
        copy = httpx.Request(request.method, request.url, headers=request.headers, content=body)

        async def send() -> httpx.Response:
            response = await self.inner.handle_async_request(copy)
            content = await response.aread()
            return httpx.Response(response.status_code, headers=response.headers,
                                  content=content, request=request)

        return self.portal.call(send)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


@contextlib.contextmanager
def running_nodes(directory: Path, db: str, count: int, **settings: Any) -> Iterator[list[Server]]:
    """`count` nodes n1, n2... of the store `db` (the standard world seeded), started; each
    SIGKILLed after, whatever happened."""
    servers = [Server(directory / f"n{i}", **{"db": db, "node": f"n{i}", **settings})
               for i in range(1, count + 1)]
    seed(servers[0].config)
    try:
        for server in servers:
            server.start()
        yield servers
    finally:
        for server in servers:
            if server.process is not None:
                server.stop(signal.SIGKILL)


def running_server(
    directory: Path, kind: type[Server] = Server, killed: bool = False, config_tail: str = "",
    **settings: Any,
) -> Iterator[tuple[Server, dict[str, str]]]:
    """The standard world on a server of `kind` started for it (a `Server` process, or
    `InProcess`), with the users' API tokens; stopped after, whatever happened (SIGKILLed if
    `killed`: a failed check must not leave a stopping server behind)."""
    server = kind(directory, config_tail, **settings)
    tokens = seed(server.config)
    server.start()
    try:
        yield server, tokens
    finally:
        if server.running:
            server.stop(signal.SIGKILL if killed else signal.SIGTERM)


@contextlib.contextmanager
def sitecustomize(directory: Path, code: str) -> Iterator[None]:
    """Servers started inside run `code` first, as their sitecustomize module."""
    (directory / "sitecustomize.py").write_text(code)
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(directory), saved) if p)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


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


# -- threads ----------------------------------------------------------------------------------
FINAL = ("completed", "failed", "cancelled")


def thread_id(answer: httpx.Response) -> str:
    """The id of the (first) thread in an answer."""
    found = re.search(r'<thread [^>]*id="([0-9a-f]{32})"', answer.text)
    assert found, f"{answer.status_code}: {answer.text[:300]}"
    return found.group(1)


def status(text: str) -> str:
    """The status of the (first) thread in an answer's text."""
    found = re.search(r'<thread [^>]*status="([a-z]+)"', text)
    assert found, text[:300]
    return found.group(1)


def start(http: httpx.Client, where: str = GROUP, **fields: Any) -> str:
    """Start a thread from form fields (the `sleep` job unless `job` names another) under
    `where` (a group's path or /ps/service); its id, once the answer is checked to be 202."""
    data = {"job": "sleep", **{k: str(v) for k, v in fields.items()}}
    answer = http.post(f"{where}/threads", data=data)
    assert answer.status_code == 202, answer.text
    return thread_id(answer)


def wait_status(http: httpx.Client, tid: str, statuses: Collection[str], where: str = GROUP,
                timeout: float = 15.0) -> httpx.Response:
    """The progress answer of thread `tid` once its status is one of `statuses`."""
    pattern = re.compile(r'<thread [^>]*status="(' + "|".join(statuses) + ')"')
    return wait_for(http, f"{where}/threads/{tid}/progress",
                    lambda r: bool(pattern.search(r.text)), timeout)


def wait_running(http: httpx.Client, tid: str, where: str = GROUP) -> httpx.Response:
    """Wait until the job itself runs: `inprogress` with the progress it reports first, so the
    runner holds it (a thread just claimed in the store is `inprogress` a moment earlier)."""
    return wait_for(http, f"{where}/threads/{tid}/progress",
                    lambda r: 'status="inprogress"' in r.text and "<progress " in r.text, 15)


def wait_final(http: httpx.Client, tid: str, where: str = GROUP,
               timeout: float = 60.0) -> httpx.Response:
    """The progress answer of thread `tid` once its status is final."""
    return wait_status(http, tid, FINAL, where, timeout)


# -- uploads ----------------------------------------------------------------------------------
Upload = tuple[str, bytes]  # a file's name and content


def file(path: Path, name: str | None = None, **replace: str) -> Upload:
    """The file at `path` as an upload, each `old=new` of `replace` replaced in it."""
    data = path.read_bytes()
    for old, new in replace.items():
        data = data.replace(old.encode(), new.encode())
    return (name or path.name, data)


def zipped(entries: list[Upload], name: str = "set.zip") -> Upload:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for entry, data in entries:
            archive.writestr(entry, data)
    return (name, buffer.getvalue())


# -- peers the server reaches -----------------------------------------------------------------
class Listener:
    """A TCP listener on 127.0.0.1 that counts connections and answers each with `body` over
    HTTP/1.0 (whatever was fetched: an entity declaration, a document, a stylesheet); with
    `body` None, a tarpit: it holds every connection and never answers."""

    def __init__(self, body: bytes | None) -> None:
        self.body = body
        self.held: list[socket.socket] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def url(self, path: str = "/evil") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            if self.body is None:
                self.held.append(conn)
                continue
            with conn:
                conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s"
                             % (len(self.body), self.body))

    def open(self) -> int:
        """Connections held (a tarpit's) that their client has not closed yet."""
        still = 0
        for conn in self.held:
            try:
                conn.setblocking(False)
                still += conn.recv(1, socket.MSG_PEEK) != b""
            except BlockingIOError:
                still += 1
            except OSError:
                pass
        return still

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        for conn in self.held:
            conn.close()
        self.sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class Received:
    path: str
    headers: Message  # names in any case
    body: bytes

    @property
    def thread(self) -> etree._Element:
        return etree.fromstring(self.body)


class Receiver:
    """An HTTP server on 127.0.0.1 recording every request (a webhook's deliveries) and
    answering `status` (with `location`, if given); `fail[path] = N` answers the next N requests
    to `path` with 500 instead."""

    def __init__(self, status: int = 204, location: str | None = None, port: int = 0) -> None:
        self.requests: list[Received] = []
        self.fail: dict[str, int] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with receiver.lock:
                    receiver.requests.append(
                        Received(self.path, self.headers, body))
                    failing = receiver.fail.get(self.path, 0)
                    if failing:
                        receiver.fail[self.path] = failing - 1
                self.send_response(500 if failing else status)
                if location and not failing:
                    self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.http.server_address[1]
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def hits(self) -> int:
        return len(self.requests)

    def received(self, path: str | None = None) -> list[Received]:
        """What came so far (to `path`, if given)."""
        with self.lock:
            return [r for r in self.requests if path is None or r.path == path]

    def finals(self) -> dict[str, set[str]]:
        """Thread id -> the delivery ids of the final statuses heard for it."""
        found: dict[str, set[str]] = {}
        for received in self.received():
            thread = re.search(rb'<thread id="([0-9a-f]{32})"', received.body)
            if thread and received.headers.get("x-threadsvc-event") == "final":
                found.setdefault(thread.group(1).decode(), set()).add(
                    received.headers["x-threadsvc-delivery"])
        return found

    def wait(self, path: str | None, count: int, timeout: float = 15.0) -> list[Received]:
        """What came (to `path`, if given), once at least `count` requests have."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.received(path)
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"{path}: {len(found)} of {count} deliveries came")
            time.sleep(0.05)

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
