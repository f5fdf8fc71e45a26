"""Jobs declared `process=True` (runner/child.py), against a real server: their reports come
back from the child process, a cancel kills the child before the thread is `cancelled`, a child
that dies fails the thread saying how, and the server answers while one spins a CPU."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import GROUP, Server, running_server, start, wait_final, wait_running
from threadsvc import job
from threadsvc.models import Level
from threadsvc.runner import child
from threadsvc.runner.child import ChildContext, check_importable

pytestmark = pytest.mark.slow  # each starts child processes (a few hundred ms each)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("process-jobs")
    for server, _ in running_server(directory, jobs=["tests.process_jobs"]):
        yield server


# -- helpers ----------------------------------------------------------------------------------
def events(http: httpx.Client, tid: str) -> list[tuple[str, str]]:
    answer = http.get(f"{GROUP}/threads/{tid}/logs")
    assert answer.status_code == 200, answer.text
    return re.findall(r'<event [^>]*level="([A-Z]+)"[^>]*>([^<]*)</event>', answer.text)


def server_pid(server: Server) -> int:
    assert server.process is not None
    return server.process.pid


def children(pid: int) -> list[int]:
    """The live child processes of `pid` (zombies are not alive)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state, ppid = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:2]
        except OSError:
            continue
        if int(ppid) == pid and state not in ("Z", "X"):
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def wait_pid(pidfile: Path) -> int:
    deadline = time.monotonic() + 15
    while not pidfile.exists() or not pidfile.read_text():
        assert time.monotonic() < deadline, "the job never wrote its pid"
        time.sleep(0.05)
    return int(pidfile.read_text())


# -- tests ------------------------------------------------------------------------------------
def test_a_process_job_reports_progress_logs_and_a_result(server: Server) -> None:
    one, two = b"<a/>", bytes(range(256)) * 40
    with server.client("contributor") as http:
        answer = http.post(f"{GROUP}/threads", data={"job": "proc-report", "steps": "4",
                                                     "label": "L1"},
                           files=[("files", ("one.xml", one, "application/xml")),
                                  ("files", ("two.bin", two, "application/octet-stream"))])
        assert answer.status_code == 202, answer.text
        tid = re.search(r'id="([0-9a-f]{32})"', answer.text).group(1)  # type: ignore[union-attr]
        final = wait_final(http, tid).text
        assert 'status="completed"' in final, final
        assert re.search(r'<progress current="4" total="4"', final), final
        logged = events(http, tid)
        result = http.get(f"/ps/service/threads/{tid}", follow_redirects=True)
    steps = [text for level, text in logged if level == "DEBUG" and text.startswith("step ")]
    assert [s.split(" in ")[0] for s in steps] == ["step 1", "step 2", "step 3", "step 4"]
    child_pid = int(steps[0].rsplit(" ", 1)[1])
    assert child_pid != server_pid(server)  # it ran in a process of its own
    assert ("INFO", "label L1") in logged and ("WARN", "a warning from the child") in logged
    assert result.status_code == 200 and result.headers["content-type"].startswith("text/plain")
    assert result.text.splitlines() == [
        f"pid {child_pid}",
        f"one.xml {len(one)} {hashlib.sha256(one).hexdigest()}",
        f"two.bin {len(two)} {hashlib.sha256(two).hexdigest()}",
    ]
    assert not alive(child_pid)


@pytest.mark.parametrize("sigterm", ["obey", pytest.param("ignore", marks=pytest.mark.slow)])
def test_a_cancel_kills_the_process_before_the_thread_is_cancelled(
    server: Server, tmp_path: Path, sigterm: str
) -> None:
    """A CPU-bound loop that never checks: SIGTERM stops it (or SIGKILL after the grace, when
    it ignores SIGTERM); by the time the thread reads `cancelled`, no process is left."""
    pidfile = tmp_path / "pid"
    with server.client("contributor") as http:
        tid = start(http, job="proc-spin", pidfile=str(pidfile), sigterm=sigterm)
        wait_running(http, tid)
        pid = wait_pid(pidfile)
        assert pid in children(server_pid(server))
        assert http.post(f"{GROUP}/threads/{tid}/cancel").status_code == 200
        final = wait_final(http, tid).text
        assert not alive(pid)  # gone before `cancelled` was written, not after
        assert 'status="cancelled"' in final, final
    assert children(server_pid(server)) == []


@pytest.mark.parametrize(("how", "said"), [
    ("segv", "The job's process was killed by signal SIGSEGV"),
    ("exit", "The job's process exited with status 7 before the job ended"),
    ("raise", "KeyError: 'min_len'"),
])
def test_a_process_that_dies_fails_the_thread_saying_how(server: Server, how: str,
                                                          said: str) -> None:
    with server.client("contributor") as http:
        tid = start(http, job="proc-die", how=how)
        final = wait_final(http, tid).text
    assert 'status="failed"' in final and f"<message>{said}</message>" in final, final
    assert children(server_pid(server)) == []


def test_health_answers_while_a_cpu_bound_process_job_runs(server: Server) -> None:
    with server.client("contributor") as http:
        tid = start(http, job="proc-spin", seconds=600)
        wait_running(http, tid)
        try:
            for _ in range(20):
                assert httpx.get(f"{server.url}/health", timeout=5).status_code == 200
        finally:
            http.post(f"{GROUP}/threads/{tid}/cancel")
            assert 'status="cancelled"' in wait_final(http, tid).text


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL])
def test_a_stopped_server_leaves_no_process_job_behind(tmp_path: Path, stop: int) -> None:
    """Stopped, the server kills the child (SIGKILL after the grace, as it ignores SIGTERM);
    SIGKILLed, the server can do nothing: its child notices and ends by itself."""
    pidfile = tmp_path / "pid"
    for server, _ in running_server(tmp_path / "server", killed=True, jobs=["tests.process_jobs"]):
        with server.client("contributor") as http:
            start(http, job="proc-spin", pidfile=str(pidfile), sigterm="ignore")
            pid = wait_pid(pidfile)
            server.stop(stop)
            if stop == signal.SIGTERM:
                assert not alive(pid)
    deadline = time.monotonic() + 10
    while alive(pid):
        assert time.monotonic() < deadline, f"process {pid} outlived its server"
        time.sleep(0.1)


# -- what the server takes from the pipe ------------------------------------------------------
class _Recorder:
    """Just what the reports reach of a Context."""

    thread_id = "t"

    def __init__(self) -> None:
        self.calls: list[tuple[object, ...]] = []

    async def progress(self, current: int, total: int | None = None) -> None:
        if isinstance(current, bool):
            raise ValueError("progress current must be a non-negative int")  # noqa: TRY004 (as Context's)
        self.calls.append(("progress", current, total))

    async def log(self, text: str, level: Level = Level.INFO) -> None:
        self.calls.append(("log", text, level))


def _frames(*reports: object, raw: bytes = b"") -> bytes:
    data = [json.dumps(report).encode() for report in reports]
    return b"".join(len(d).to_bytes(4, "big") + d for d in data) + raw


def _read(data: bytes, recorder: _Recorder) -> object:
    """What the server reads from a child that wrote `data`, then closed its end."""

    async def read() -> object:
        stream = asyncio.StreamReader()
        stream.feed_data(data)
        stream.feed_eof()
        return await child._read(stream, recorder, Path("/nonexistent"))  # type: ignore[arg-type]

    return asyncio.run(read())


def test_reports_are_applied_until_the_last() -> None:
    recorder = _Recorder()
    stream = _frames({"op": "progress", "current": 1, "total": 2},
                     {"op": "log", "text": "x", "level": "WARN"}, {"op": "done"},
                     {"op": "log", "text": "after the end", "level": "INFO"})
    assert _read(stream, recorder) == {"op": "done"}
    assert recorder.calls == [("progress", 1, 2), ("log", "x", Level.WARN)]
    assert _read(_frames(), _Recorder()) is None  # no report: the exit tells


@pytest.mark.parametrize(("data", "said"), [
    (_frames(raw=(child.MAX_FRAME + 1).to_bytes(4, "big")), "a report of 1048577 bytes"),
    (_frames(raw=b"\x00\x00\x00\x05{nope"), "not JSON"),
    (_frames(raw=b"\x00\x00\x00\x09{}"), "part of a report"),
    (_frames(raw=b"\x00\x00"), "part of a report"),
    (_frames(raw=len(b"[" * 500_000).to_bytes(4, "big") + b"[" * 500_000), "not JSON"),
    (_frames(raw=b"\x00\x00\x13\x88" + b"9" * 5000), "not JSON"),
    (_frames([1, 2]), "not an object"),
    (_frames({"op": "shell", "argv": ["rm"]}), "unknown report ('shell')"),
    (_frames({"op": "log", "text": 5, "level": "INFO"}), "unknown report ('log')"),
    (_frames({"op": "log", "text": "x", "level": "LOUD"}), "unknown report ('log')"),
    (_frames({"op": "progress", "current": "1", "total": None}), "unknown report"),
    (_frames({"op": "progress", "current": 1, "total": 2**63}), "beyond what the store holds"),
    (_frames({"op": "result", "name": "r", "media_type": "text/plain\r\nX: y"}),
     "no valid media type"),
])
def test_a_bad_report_is_refused(data: bytes, said: str) -> None:
    with pytest.raises(child.ChildProtocolError, match=re.escape(said)):
        _read(data, _Recorder())


def test_a_report_the_context_refuses_is_raised() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        _read(_frames({"op": "progress", "current": True, "total": None}), _Recorder())


def test_a_result_is_taken_only_from_a_regular_file_at_the_named_path(tmp_path: Path) -> None:
    """The child may put a link (or a directory) where the server named its result file."""
    (tmp_path / "link").symlink_to("/etc/passwd")
    (tmp_path / "folder").mkdir()
    for name, said in [("link", "cannot be read"), ("folder", "not a regular file"),
                       ("missing", "cannot be read")]:
        with pytest.raises(child.ChildProtocolError, match=said):
            asyncio.run(child._take_result(_Recorder(), tmp_path / name,  # type: ignore[arg-type]
                                           "r.txt", "text/plain"))


# -- declaring --------------------------------------------------------------------------------
def test_a_closure_or_a_main_function_cannot_be_a_process_job() -> None:
    async def inner(ctx: ChildContext) -> None:
        pass

    with pytest.raises(ValueError, match="closure or lambda"):
        job("inner", process=True)(inner)  # type: ignore[arg-type]

    async def in_main(ctx: ChildContext) -> None:
        pass

    in_main.__module__ = "__main__"
    in_main.__qualname__ = "in_main"
    with pytest.raises(ValueError, match="__main__"):
        check_importable(in_main)
    assert job("inner", process=False)(inner).fn is inner  # type: ignore[arg-type]
