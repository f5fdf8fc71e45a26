"""The commands as people and scripts see them, run for real: the exit status of each outcome
against a real server, the progress line redrawn only at a terminal (a pseudo-terminal here),
and passwords asked twice without echo at a terminal."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from tests.support import Server, password, running_server
from threadsvc.identity import verify_password
from threadsvc.store.sqlite import SQLiteStore

CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("THREADSVC_")}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    for running, _ in running_server(tmp_path_factory.mktemp("terminal")):
        yield running


def threads(server: Server, *args: str, user: str = "contributor"
            ) -> subprocess.CompletedProcess[str]:
    command, rest = args[0], args[1:]
    return subprocess.run(
        [sys.executable, "-m", "threadsvc", "threads", command, "--url", server.url,
         "--user", user, "--password", password(user), "--group", "dev", *rest],
        capture_output=True, text=True, env=CLEAN_ENV, timeout=90, check=False)


def started(server: Server, *params: str) -> str:
    done = threads(server, "start", "sleep", *params)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.slow  # tests/test_client.py keeps failed, cancelled and errors in the fast tier
def test_each_outcome_has_its_own_exit_status(server: Server) -> None:
    completed = threads(server, "start", "sleep", "seconds=0.5", "steps=5", "--wait")
    assert completed.returncode == 0, completed.stderr

    failing = started(server, "seconds=0.3", "steps=3", "fail=2")
    assert threads(server, "watch", failing).returncode == 3

    long = started(server, "seconds=60", "steps=60")
    gave_up = threads(server, "watch", long, "--timeout", "1")
    assert gave_up.returncode == 5, gave_up.stderr
    assert f"gave up: thread {long} still" in gave_up.stderr
    assert threads(server, "cancel", long).returncode == 0
    assert threads(server, "watch", long).returncode == 4

    # errors are 1, as click's own; usage errors 2
    assert threads(server, "show", "0" * 32).returncode == 1
    assert threads(server, "start", "sleep", user="reviewer").returncode == 1
    assert threads(server, "watch").returncode == 2  # no ID
    assert threads(server, "start", "sleep", "not-a-pair").returncode == 2


def test_off_a_terminal_progress_is_plain_lines(server: Server) -> None:
    done = threads(server, "start", "sleep", "seconds=1", "steps=5", "--wait")
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr
    lines = done.stderr.splitlines()
    assert lines[-1].startswith(f"thread {done.stdout.strip()} completed")
    assert not any(line.startswith("completed") for line in lines)  # the end is said once
    steps = [line for line in lines if re.match(r"inprogress \d/5 \(\d+%\)", line)]
    assert steps, done.stderr  # a line per change, not one redrawn line
    assert len(steps) == len(set(steps))  # and none repeated


# Run in the child, a session leader (start_new_session): make its standard error, the
# pseudo-terminal, its controlling terminal (what getpass opens as /dev/tty), then run the command.
CONTROLLING_TERMINAL = (
    "import fcntl, os, sys, termios; fcntl.ioctl(2, termios.TIOCSCTTY, 0); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


def pty_run(args: list[str], answers: list[tuple[str, str]], stdin_tty: bool = True,
            timeout: float = 60) -> tuple[int, str, str]:
    """Run `args` with a new pseudo-terminal as controlling terminal and standard error (and,
    with `stdin_tty`, standard input and output): each (prompt, reply) is answered when the
    prompt appears. Returns the exit status, what the terminal showed and standard output."""
    master, slave = pty.openpty()
    inout = slave if stdin_tty else subprocess.PIPE
    process = subprocess.Popen([sys.executable, "-c", CONTROLLING_TERMINAL, *args], stdin=inout,
                               stdout=inout, stderr=slave, env=CLEAN_ENV, start_new_session=True)
    os.close(slave)
    shown = b""
    deadline = time.monotonic() + timeout
    pending = list(answers)
    try:
        while time.monotonic() < deadline:
            if pending and pending[0][0].encode() in shown:
                os.write(master, pending.pop(0)[1].encode())
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: every end of the terminal is closed
                break
            if not chunk:
                break
            shown += chunk
        out = process.stdout.read().decode() if process.stdout is not None else ""
        return process.wait(timeout), shown.decode(errors="replace"), out
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()


def test_at_a_terminal_progress_is_one_redrawn_line(server: Server) -> None:
    thread_id = started(server, "seconds=1", "steps=5")
    code, shown, out = pty_run(
        [sys.executable, "-m", "threadsvc", "threads", "watch", thread_id, "--url", server.url,
         "--user", "contributor", "--password", password("contributor"), "--group", "dev"],
        [], stdin_tty=False)
    assert code == 0, shown
    assert "\r" in shown and "[" in shown and f"thread {thread_id} completed" in shown
    assert out == ""


def _password_hash(db: Path, username: str) -> str | None:
    async def read() -> str | None:
        store = SQLiteStore(db)
        await store.open()
        try:
            found = await store.get_user(username)
            assert found is not None
            return found[1]
        finally:
            await store.close()

    return anyio.run(read)


def test_a_password_at_a_terminal_is_asked_twice_and_not_echoed(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    url = f"sqlite:///{db}"
    base = [sys.executable, "-m", "threadsvc", "user"]
    code, shown, _ = pty_run([*base, "add", "--db", url, "ann", "--password-stdin"],
                             [("New password: ", "first-secret\n"), ("Again: ", "first-secret\n")])
    assert code == 0, shown
    assert "first-secret" not in shown and "added user ann" in shown
    assert verify_password("first-secret", _password_hash(db, "ann") or "")

    code, shown, _ = pty_run([*base, "passwd", "--db", url, "ann"],
                             [("New password: ", "second-secret\n"), ("Again: ", "typo\n")])
    assert code == 1 and "differ" in shown and "second-secret" not in shown, shown
    assert verify_password("first-secret", _password_hash(db, "ann") or "")  # unchanged

    code, shown, _ = pty_run([*base, "passwd", "--db", url, "ann"],
                             [("New password: ", "second-secret\n"), ("Again: ", "second-secret\n")])
    assert code == 0 and "second-secret" not in shown, shown
    assert verify_password("second-secret", _password_hash(db, "ann") or "")

    # from a pipe: one line, no prompt
    piped = subprocess.run([*base, "passwd", "--db", url, "ann"], input="third-secret\n",
                           capture_output=True, text=True, env=CLEAN_ENV, timeout=60, check=False)
    assert piped.returncode == 0 and "New password" not in piped.stderr, piped.stderr
    assert verify_password("third-secret", _password_hash(db, "ann") or "")
