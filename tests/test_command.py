"""The `command` job (docs/api.md#jobs): declared commands, their parameters, output, exit status,
cancel (SIGTERM, then SIGKILL after the grace, to the whole process group) and timeout."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from lxml import etree

from tests import support
from tests.support import Server, running_server, seed
from threadsvc.jobs.command.process import run_command
from threadsvc.jobs.command.settings import GRACE_SECONDS, parse_commands
from threadsvc.settings import SettingsError
from threadsvc.xml.schemas import validate

XML_TYPE = "application/xml;charset=utf-8"
GROUP = "/ps/service/groups/dev"
SERVER = "/ps/service"
SCRIPTS = Path(__file__).parent / "commands"
FINAL = ("completed", "failed", "cancelled")
ODD_TEXT = "a b; rm -rf ~ && echo $(id) `x` 'q' \"d\" | * > /tmp/f {who} \\ $HOME"

_SCHEMA_LOCK = threading.Lock()


def _s(value: str) -> str:
    return json.dumps(value)  # a JSON string is a TOML basic string


def script(name: str, *args: str) -> str:
    return "[" + ", ".join(_s(a) for a in (sys.executable, str(SCRIPTS / name), *args)) + "]"


def commands_toml(workdir: Path) -> str:
    return f"""
[commands.steps]
argv = {script("steps.py")}

[commands.lines]
argv = {script("lines.py")}

[commands.fail]
argv = {script("fail.py", "{code}")}
params = {{ code = "[0-9]{{1,3}}|kill" }}

[commands.echo]
argv = {script("argv.py", "--text", "{text}", "--who={who}", "{{braces}}")}
params = {{ text = ".{{0,200}}", who = "^[a-z]{{1,20}}$" }}
env = {{ GREETING = "hello" }}
cwd = {_s(str(workdir))}
level = "both"

[commands.stubborn]
argv = {script("stubborn.py")}
grace = 1

[commands.sleepy]
argv = {script("sleepy.py")}

[commands.slow]
argv = {script("sleepy.py")}
timeout = 1
grace = 1

[commands.background]
argv = {script("background.py")}

[commands.private]
argv = {script("steps.py")}
role = "manager"

[commands.admin-only]
argv = {script("steps.py")}
level = "server"

[commands.missing]
argv = ["/nonexistent/program"]
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("command")
    workdir = directory / "work"
    workdir.mkdir()
    for server, _ in running_server(directory, config_tail=commands_toml(workdir),
                                    **{"max-running": 64}):
        yield server


# -- helpers ----------------------------------------------------------------------------------
def parse_xml(response: httpx.Response) -> Any:
    assert response.headers.get("content-type") == XML_TYPE, response.headers
    root = etree.fromstring(response.content)
    with _SCHEMA_LOCK:
        validate(response.content)
    return root


def check_error(response: httpx.Response, status: int, error_id: str, naming: str = "") -> str:
    assert response.status_code == status, response.text
    root = parse_xml(response)
    assert root.tag == "error" and root.get("id") == error_id, response.text
    message = str(root.findtext("message"))
    if naming:
        assert f"'{naming}'" in message, message
    return message


def post(http: httpx.Client, where: str = GROUP, **fields: str) -> httpx.Response:
    return http.post(f"{where}/threads", data={"job": "command", **fields})


def start(http: httpx.Client, name: str, where: str = GROUP, **params: str) -> str:
    response = post(http, where, name=name, **params)
    assert response.status_code == 202, response.text
    root = parse_xml(response)
    assert root.get("type") == "command"
    return str(root.get("id"))


def thread(http: httpx.Client, tid: str, where: str = GROUP) -> Any:
    response = http.get(f"{where}/threads/{tid}/progress")
    assert response.status_code == 200, response.text
    return parse_xml(response)


def wait_final(http: httpx.Client, tid: str, where: str = GROUP, timeout: float = 20) -> Any:
    return parse_xml(support.wait_final(http, tid, where, timeout))


def events(http: httpx.Client, tid: str, where: str = GROUP) -> list[tuple[str, str]]:
    response = http.get(f"{where}/threads/{tid}/logs")
    assert response.status_code == 200, response.text
    return [(e.get("level"), e.text or "") for e in parse_xml(response)]


def wait_event(http: httpx.Client, tid: str, prefix: str, where: str = GROUP) -> str:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        for _, text in events(http, tid, where):
            if text.startswith(prefix):
                return text
        time.sleep(0.05)
    raise AssertionError(f"no event starting {prefix!r}: {events(http, tid, where)}")


def process_group(http: httpx.Client, tid: str) -> tuple[int, int]:
    """The command's process group (its leader's pid) and the pid of the child it started."""
    started = wait_event(http, tid, "Command '")
    pgid = int(re.findall(r"process (\d+)", started)[0])
    child = int(wait_event(http, tid, "pids: ").split()[1])
    return pgid, child


def alive(pid: int, pgid: bool = False) -> bool:
    """Whether a process (or a process group) still has a live member. kill(…, 0) also
    succeeds on zombies, which a PID 1 that does not reap orphans may keep: /proc tells."""
    try:
        if pgid:
            os.killpg(pid, 0)
        else:
            os.kill(pid, 0)
    except ProcessLookupError:
        return False
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        state, _ppid, group = stat.rsplit(")", 1)[1].split()[:3]
        member = int(group) == pid if pgid else int(entry.name) == pid
        if member and state not in ("Z", "X"):
            return True
    return False


def wait_gone(pgid: int, child: int, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while alive(pgid, pgid=True) or alive(child):
        assert time.monotonic() < deadline, f"process group {pgid} or child {child} still alive"
        time.sleep(0.05)


def cancel(http: httpx.Client, tid: str, where: str = GROUP) -> None:
    response = http.post(f"{where}/threads/{tid}/cancel")
    assert response.status_code == 200, response.text
    assert parse_xml(response).tag == "thread-cancel"


# -- running ----------------------------------------------------------------------------------
def test_progress_lines_set_progress_and_output_lines_are_events(server: Server) -> None:
    with server.client("contributor") as http:
        tid = start(http, "steps")
        final = wait_final(http, tid)
        assert final.get("status") == "completed", etree.tostring(final)
        assert final.find("progress").attrib == {"current": "3", "total": "3", "percent": "100"}
        assert final.findtext("message") == "Command 'steps' completed"
        found = events(http, tid)
        output = [(lv, text) for lv, text in found if not text.startswith(("Status:", "Command"))]
        # stdout and stderr are read side by side: each one's own order is kept
        assert [text for lv, text in output if lv == "INFO"] == ["step 1", "step 2", "step 3", "done"]
        assert [text for lv, text in output if lv == "WARN"] == ["careful: almost done"]
        assert len(output) == 5, found
        assert not any("progress:" in text for _, text in found), found
        # a line on stderr is a WARN event, not a reported warning: the counts stay at 0
        assert final.get("warnings") == "0" and final.get("errors") == "0"


def test_awkward_output_lines(server: Server) -> None:
    with server.client("contributor") as http:
        tid = start(http, "lines")
        assert wait_final(http, tid).get("status") == "completed"
        output = [t for level, t in events(http, tid) if level == "INFO" and not t.startswith(
            ("Status:", "Command"))]
        assert len(output) == 6, output  # blank lines are not logged, progress lines neither
        long, after, bad, crlf, beyond, last = output
        assert long.startswith("long xxx") and long.endswith("(line cut)")
        assert len(long) < 17_000
        assert after == "after the long line"
        assert bad == "bad \ufffd\ufffd utf-8"
        assert crlf == "windows line"
        assert beyond == "progress: 9/3"  # beyond its total: not progress, so logged
        assert last == "  indented"  # the last line needs no newline
        progress = thread(http, tid).find("progress")
        assert progress is not None and progress.attrib == {"current": "2", "total": "4", "percent": "50"}


def test_exit_status_zero_completes_and_others_fail_with_the_status(server: Server) -> None:
    with server.client("contributor") as http:
        ok, three, killed = (start(http, "fail", code=c) for c in ("0", "3", "kill"))
        assert wait_final(http, ok).get("status") == "completed"
        final = wait_final(http, three)
        assert final.get("status") == "failed"
        assert final.findtext("message") == "Command 'fail' exited with status 3"
        found = events(http, three)
        assert ("WARN", "about to fail") in found
        assert ("ERROR", "Command 'fail' exited with status 3") in found
        final = wait_final(http, killed)
        assert final.get("status") == "failed"
        assert final.findtext("message") == "Command 'fail' was killed by signal SIGKILL"


def test_a_program_that_does_not_exist_fails(server: Server) -> None:
    with server.client("contributor") as http:
        final = wait_final(http, start(http, "missing"))
        assert final.get("status") == "failed"
        message = final.findtext("message")
        assert message.startswith("Command 'missing' could not start:"), message
        assert "/nonexistent/program" in message


def test_values_stay_one_argv_item_with_no_shell_and_a_minimal_environment(
    server: Server,
) -> None:
    with server.client("contributor") as http:
        tid = start(http, "echo", text=ODD_TEXT, who="bob")
        assert wait_final(http, tid).get("status") == "completed"
        line = wait_event(http, tid, '{"argv"')
        seen = json.loads(line)
        assert seen["argv"] == ["--text", ODD_TEXT, "--who=bob", "{braces}"]
        assert Path(seen["cwd"]).name == "work"
        env = seen["env"]
        assert env["GREETING"] == "hello" and env["PATH"]
        assert set(env) - {"LC_CTYPE"} == {"PATH", "LANG", "GREETING"}, env
    with server.client("contributor") as http:  # an empty value is one (empty) item too
        tid = start(http, "echo", text="", who="x")
        wait_final(http, tid)
        assert json.loads(wait_event(http, tid, '{"argv"'))["argv"][:2] == ["--text", ""]


def test_the_xml_body_names_the_command_with_a_param(server: Server) -> None:
    body = (
        '<job name="command"><param name="name">echo</param>'
        '<param name="text">one two</param><param name="who" value="amy"/></job>'
    )
    with server.client("contributor") as http:
        response = http.post(
            f"{GROUP}/threads", content=body, headers={"Content-Type": "application/xml"}
        )
        assert response.status_code == 202, response.text
        tid = str(parse_xml(response).get("id"))
        wait_final(http, tid)
        seen = json.loads(wait_event(http, tid, '{"argv"'))
        assert seen["argv"][:3] == ["--text", "one two", "--who=amy"]


# -- stopping ---------------------------------------------------------------------------------
def test_cancel_sends_sigterm_to_the_group(server: Server) -> None:
    with server.client("contributor") as http:
        tid = start(http, "sleepy")
        pgid, child = process_group(http, tid)
        assert alive(pgid, pgid=True) and alive(child)
        began = time.monotonic()
        cancel(http, tid)
        final = wait_final(http, tid)
        elapsed = time.monotonic() - began
        assert final.get("status") == "cancelled"
        assert elapsed < GRACE_SECONDS / 2, elapsed  # SIGTERM was enough: no wait for the grace
        assert ("INFO", "terminating") in events(http, tid)  # output is read to the end
        wait_gone(pgid, child)


def test_a_command_ignoring_sigterm_is_killed_after_the_grace(server: Server) -> None:
    with server.client("contributor") as http:
        tid = start(http, "stubborn")  # grace = 1
        pgid, child = process_group(http, tid)
        began = time.monotonic()
        cancel(http, tid)
        final = wait_final(http, tid)
        elapsed = time.monotonic() - began
        assert final.get("status") == "cancelled"
        assert final.findtext("message").startswith("Cancelled")
        assert 0.9 <= elapsed < 6, elapsed
        assert ("INFO", "ignoring SIGTERM") in events(http, tid)
        wait_gone(pgid, child)


def test_the_timeout_ends_the_thread_failed(server: Server) -> None:
    with server.client("contributor") as http:
        began = time.monotonic()
        tid = start(http, "slow")  # timeout = 1, grace = 1; it stops on SIGTERM
        pgid, child = process_group(http, tid)
        final = wait_final(http, tid)
        assert final.get("status") == "failed"
        assert final.findtext("message") == "Command 'slow' timed out after 1 seconds"
        assert 0.9 <= time.monotonic() - began < 8
        found = events(http, tid)
        assert ("INFO", "terminating") in found
        assert ("WARN", "Command 'slow' timed out after 1 seconds; stopping it") in found
        wait_gone(pgid, child)


def test_what_a_command_leaves_behind_is_killed(server: Server) -> None:
    with server.client("contributor") as http:
        tid = start(http, "background")
        final = wait_final(http, tid)
        assert final.get("status") == "completed"
        pgid, child = process_group(http, tid)
        wait_gone(pgid, child)


# -- refusals ---------------------------------------------------------------------------------
def test_the_command_name_is_required_and_must_be_declared(server: Server) -> None:
    with server.client("contributor") as http:
        check_error(post(http), 400, "0201", "name")
        check_error(post(http, name="nope"), 400, "0201", "name")
        check_error(post(http, name="STEPS"), 400, "0201", "name")
        response = http.post(
            f"{GROUP}/threads", data={"job": "command", "name": "steps"}, params={"name": "fail"}
        )
        check_error(response, 400, "0201", "name")  # given twice


def test_parameters_missing_undeclared_or_not_matching_are_400(server: Server) -> None:
    with server.client("contributor") as http:
        check_error(post(http, name="echo", text="x"), 400, "0201", "who")
        check_error(post(http, name="echo", text="x", who="bob", extra="1"), 400, "0201", "extra")
        message = check_error(post(http, name="echo", text="x", who="Bob"), 400, "0201", "who")
        assert "must match" in message
        check_error(post(http, name="echo", text="x", who="bob\n"), 400, "0201", "who")
        check_error(post(http, name="echo", text="x" * 201, who="bob"), 400, "0201", "text")
        check_error(post(http, name="fail", code="3 4"), 400, "0201", "code")
        check_error(post(http, name="steps", code="3"), 400, "0201", "code")
        response = http.post(
            f"{GROUP}/threads",
            data={"job": "command", "name": "echo", "who": "bob"},
            files={"text": ("t.txt", b"x", "text/plain")},
        )
        check_error(response, 400, "0201", "text")


def test_role_per_command(server: Server) -> None:
    with server.client("contributor") as http:
        message = check_error(post(http, name="private"), 403, "0101")
        assert "manager" in message and "private" in message
    with server.client("reviewer") as http:  # below the lowest role of every command
        check_error(post(http, name="steps"), 403, "0101")
    with server.client("manager") as http:
        assert wait_final(http, start(http, "private")).get("status") == "completed"


def test_level_per_command(server: Server) -> None:
    with server.client("admin") as http:
        check_error(post(http, name="admin-only"), 400, "0201", "name")
        check_error(post(http, SERVER, name="steps"), 400, "0201", "name")
        tid = start(http, "admin-only", SERVER)
        assert wait_final(http, tid, SERVER).get("status") == "completed"
        tid = start(http, "echo", SERVER, text="t", who="admin")  # level both
        assert wait_final(http, tid, SERVER).get("status") == "completed"
    with server.client("manager") as http:
        check_error(post(http, SERVER, name="admin-only"), 403, "0101")


# -- settings ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("table", "where"),
    [
        ({}, "commands.c.argv"),
        ({"argv": []}, "commands.c.argv"),
        ({"argv": "echo hi"}, "commands.c.argv"),
        ({"argv": ["echo", 3]}, "commands.c.argv"),
        ({"argv": [""]}, "commands.c.argv"),
        ({"argv": ["echo", "{who}"]}, "commands.c.argv"),
        ({"argv": ["{who}"], "params": {"who": "x"}}, "commands.c.argv"),
        ({"argv": ["echo", "a{b"]}, "commands.c.argv"),
        ({"argv": ["echo", "{who}"], "params": {"who": "("}}, "commands.c.params.who"),
        ({"argv": ["echo", "{who}"], "params": {"who": 3}}, "commands.c.params.who"),
        ({"argv": ["echo"], "params": {"who": "x"}}, "commands.c.params.who"),
        ({"argv": ["echo", "{name}"], "params": {"name": "x"}}, "commands.c.params.name"),
        ({"argv": ["echo"], "params": "who"}, "commands.c.params"),
        ({"argv": ["echo"], "role": "boss"}, "commands.c.role"),
        ({"argv": ["echo"], "role": 3}, "commands.c.role"),
        ({"argv": ["echo"], "level": "everywhere"}, "commands.c.level"),
        ({"argv": ["echo"], "timeout": 0}, "commands.c.timeout"),
        ({"argv": ["echo"], "timeout": "600"}, "commands.c.timeout"),
        ({"argv": ["echo"], "timeout": float("inf")}, "commands.c.timeout"),
        ({"argv": ["echo"], "grace": -1}, "commands.c.grace"),
        ({"argv": ["echo"], "cwd": 7}, "commands.c.cwd"),
        ({"argv": ["echo"], "env": ["A=1"]}, "commands.c.env"),
        ({"argv": ["echo"], "env": {"A": 1}}, "commands.c.env.A"),
        ({"argv": ["echo"], "env": {"A=B": "1"}}, "commands.c.env.A=B"),
        ({"argv": ["echo"], "shell": True}, "commands.c.shell"),
        ("echo", "commands.c"),
    ],
)
def test_bad_command_settings_name_the_command_and_key(table: Any, where: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(f"setting '{where}'")):
        parse_commands({"c": table})


def test_good_command_settings() -> None:
    commands = parse_commands({
        "greet": {
            "argv": ["python3", "greet.py", "--name={who}", "{{literal}}", "{who}{n}"],
            "params": {"who": "^[a-z]{1,20}$", "n": "[0-9]"},
            "role": "Manager", "level": "both", "timeout": 600, "grace": 0,
            "cwd": "/srv", "env": {"A": "1"},
        }
    })
    greet = commands["greet"]
    assert greet.argv_for({"who": "a b", "n": "1"}) == [
        "python3", "greet.py", "--name=a b", "{literal}", "a b1",
    ]
    assert greet.timeout == 600 and greet.grace == 0 and greet.role.label == "manager"
    assert greet.environment()["A"] == "1" and set(greet.environment()) == {"PATH", "LANG", "A"}


def test_a_bad_command_table_stops_the_server_at_start_up(tmp_path: Path) -> None:
    server = Server(tmp_path)
    with server.config.open("a") as config:
        config.write('\n[commands.bad]\nargv = ["echo", "{who}"]\n')
    seed(server.config)
    with pytest.raises(RuntimeError, match=re.escape("setting 'commands.bad.argv'")):
        server.start()


@pytest.mark.slow  # waits on real time
def test_stopping_the_server_leaves_no_process_behind(tmp_path: Path) -> None:
    server = Server(tmp_path)  # shutdown-grace = 1
    with server.config.open("a") as config:
        config.write(f'\n[commands.stubborn]\nargv = {script("stubborn.py")}\n')  # grace 10
    seed(server.config)
    server.start()
    try:
        with server.client("contributor") as http:
            tid = start(http, "stubborn")
            pgid, child = process_group(http, tid)
    finally:
        server.stop()
    try:
        wait_gone(pgid, child)
    finally:
        for pid in (pgid, child):  # do not leave them to the rest of the suite
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


class _FakeContext:
    """Just what run_command uses of a Context."""

    thread_id = "fake"

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    async def log(self, text: str, level: Any = None) -> None:
        self.events.append((str(level), text))

    async def progress(self, current: int, total: int | None = None) -> None:
        self.events.append(("progress", f"{current}/{total}"))

    async def message(self, text: str) -> None:
        self.events.append(("message", text))


def test_a_second_cancel_during_the_grace_kills_at_once() -> None:
    command = parse_commands({"stubborn": {"argv": [sys.executable, str(SCRIPTS / "stubborn.py")]}})
    stubborn = command["stubborn"]  # grace 10
    ctx = _FakeContext()

    async def main() -> float:
        run = run_command(ctx, stubborn, stubborn.argv_for({}))  # type: ignore[arg-type]
        task = asyncio.create_task(run)
        while not any(text.startswith("pids:") for _, text in ctx.events):  # noqa: ASYNC110
            await asyncio.sleep(0.02)  # (the command's output has no event to wait on)
        task.cancel()
        await asyncio.sleep(0.3)
        assert not task.done()  # in its grace
        began = time.monotonic()
        task.cancel()  # say, the server shutting down
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.monotonic() - began

    assert asyncio.run(main()) < 2
    started = next(text for _, text in ctx.events if text.startswith("Command 'stubborn'"))
    pgid = int(re.findall(r"process (\d+)", started)[0])
    child = int(next(t for _, t in ctx.events if t.startswith("pids:")).split()[1])
    wait_gone(pgid, child)
    assert any(text == "ignoring SIGTERM" for _, text in ctx.events)  # SIGTERM came first
