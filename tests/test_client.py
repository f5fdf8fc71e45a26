"""threadsvc.client and `threadsvc threads ...` against a real server (tests/support.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from tests.support import Server, free_port, password, running_server
from threadsvc.client import (
    AsyncClient,
    Client,
    ClientError,
    ConnectionFailed,
    LogEntry,
    NotFinished,
    ThreadInfo,
    WaitTimeout,
)

pytestmark = pytest.mark.slow

HEX32 = re.compile(r"[0-9a-f]{32}")


def client(server: Server, user: str = "contributor", group: str | None = "dev") -> Client:
    return Client(server.url, username=user, password=password(user), group=group)


# -- the library ----------------------------------------------------------------------------------
def test_start_with_form_fields(server: Server) -> None:
    c = client(server)
    thread = c.start("sleep", {"seconds": "0.2", "steps": "2"})
    assert HEX32.fullmatch(thread.id)
    assert (thread.username, thread.groupid, thread.type) == ("contributor", 240, "sleep")
    assert thread.status in ("initialised", "inprogress")
    progress_url, result_url = c._urls[thread.id]  # as the server sent them
    assert progress_url == f"{server.url}/ps/service/groups/dev/threads/{thread.id}/progress"
    assert result_url == f"{server.url}/ps/service/groups/dev/threads/{thread.id}/result"
    final = c.wait(thread.id, timeout=20)
    assert final.status == "completed" and final.final
    assert (final.current, final.total, final.percent) == (2, 2, 100)
    assert final.started and final.ended and final.message
    assert c.get(thread.id) == final  # the task resource: no result, so 200


def test_start_with_token_and_idempotency_key(server: Server, tokens: dict[str, str]) -> None:
    c = Client(server.url, token=tokens["contributor"], group="dev")
    first = c.start("sleep", {"seconds": "0"}, idempotency_key="client-test-key-1")
    again = c.start("sleep", {"seconds": "0"}, idempotency_key="client-test-key-1")
    assert again.id == first.id
    assert c.wait(first.id, timeout=20).status == "completed"


def test_wait_calls_back_with_increasing_progress(server: Server) -> None:
    c = client(server)
    thread = c.start("sleep", {"seconds": "1.5", "steps": "5", "result": "done"})
    seen: list[ThreadInfo] = []
    final = c.wait(thread.id, on_progress=seen.append, timeout=30)
    assert final.status == "completed"
    assert seen[-1] == final
    currents = [t.current or 0 for t in seen]
    assert currents == sorted(currents)
    assert len(set(currents)) >= 3, currents  # long-polls saw the steps, not just the end
    assert all(not t.final for t in seen[:-1])
    assert final.result_href and final.result_media_type == "text/plain"


def test_wait_with_async_callback_and_timeout(server: Server) -> None:
    async def main() -> None:
        async with AsyncClient(server.url, username="contributor",
                               password=password("contributor"), group="dev") as c:
            thread = await c.start("sleep", {"seconds": "30"})
            seen: list[str] = []

            async def note(t: ThreadInfo) -> None:
                seen.append(t.status)

            with pytest.raises(WaitTimeout) as caught:
                await c.wait(thread.id, on_progress=note, timeout=1)
            assert caught.value.thread.id == thread.id and seen
            await c.cancel(thread.id)
            assert (await c.wait(thread.id, timeout=10)).status == "cancelled"

    anyio.run(main)


def test_logs_over_several_pages(server: Server) -> None:
    c = client(server)
    thread = c.start("sleep", {"seconds": "0.3", "steps": "6", "warn": "2", "result": "x"})
    c.wait(thread.id, timeout=20)
    whole = c.logs_page(thread.id)
    assert not whole.more and whole.total == len(whole.events) >= 5
    paged = list(c.logs(thread.id, page_size=2))
    assert paged == list(whole.events)
    assert [e.seq for e in paged] == sorted(e.seq for e in paged)
    assert all(isinstance(e, LogEntry) and e.datetime.endswith("Z") for e in paged)
    assert paged[-1].text == "Status: completed"
    warnings = list(c.logs(thread.id, "WARN", page_size=1))
    assert warnings and all(e.level in ("WARN", "ERROR") for e in warnings)
    first_page = c.logs_page(thread.id, limit=2)
    assert first_page.more and first_page.next == first_page.events[-1].seq
    found = list(c.logs(thread.id, text="WARNING AT", page_size=1))  # searched by the server
    assert [e.text for e in found] == ["Warning at step 2"]

    async def iterate() -> list[LogEntry]:
        async with AsyncClient(server.url, username="contributor",
                               password=password("contributor"), group="dev") as ac:
            return [e async for e in ac.logs(thread.id, page_size=3)]

    assert anyio.run(iterate) == paged


def test_cancel(server: Server) -> None:
    c = client(server)
    thread = c.start("sleep", {"seconds": "30"})
    after = c.cancel(thread.id)
    assert after is not None and after.id == thread.id
    final = c.wait(thread.id, timeout=10)
    assert final.status == "cancelled"
    assert c.cancel(thread.id) == final  # a finished thread is unchanged
    assert c.cancel("0" * 32) is None  # no such thread: no effect
    with pytest.raises(ClientError) as caught:
        c.download(thread.id, "unused")
    assert (caught.value.status, caught.value.error_id) == (409, "0402")


def test_download(server: Server, tmp_path: Path) -> None:
    c = client(server)
    text = "the result text\nwith two lines é\n"
    thread = c.start("sleep", {"seconds": "0.1", "result": text})
    c.wait(thread.id, timeout=20)
    target = tmp_path / "result.txt"
    assert c.download(thread.id, target) == target
    assert target.read_text(encoding="utf-8") == text
    assert list(tmp_path.iterdir()) == [target]  # no partial file left behind
    assert c.get(thread.id).status == "completed"  # 303 to the result is still the thread
    # A client that did not start it builds the URL from the group.
    other = client(server, "reviewer")
    assert other.download(thread.id, tmp_path / "again.txt") is not None
    assert (tmp_path / "again.txt").read_text(encoding="utf-8") == text


def test_download_without_result_and_before_the_end(server: Server, tmp_path: Path) -> None:
    c = client(server)
    done = c.start("sleep", {"seconds": "0"})
    c.wait(done.id, timeout=20)
    assert c.download(done.id, tmp_path / "none") is None  # 204
    assert not (tmp_path / "none").exists()
    running = c.start("sleep", {"seconds": "30"})
    with pytest.raises(NotFinished) as caught:
        c.download(running.id, tmp_path / "early")
    assert caught.value.thread.id == running.id and not caught.value.thread.final
    c.cancel(running.id)


@pytest.fixture(scope="module")
def short_lived(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server that deletes results a second after their thread ended, and allows each user
    two active threads."""
    settings = {"result-ttl": 1, "max-active-per-user": 2}
    for server, _ in running_server(tmp_path_factory.mktemp("short"), **settings):
        yield server


def test_too_many_active_threads(short_lived: Server) -> None:
    c = client(short_lived, "manager")
    running = [c.start("sleep", {"seconds": "30"}) for _ in range(2)]
    with pytest.raises(ClientError) as caught:
        c.start("sleep", {"seconds": "30"})
    assert (caught.value.status, caught.value.error_id) == (429, "0300")
    assert caught.value.retry_after is not None and caught.value.retry_after > 0
    for thread in running:
        c.cancel(thread.id)
        assert c.wait(thread.id, timeout=10).status == "cancelled"


def test_download_of_a_deleted_result(short_lived: Server, tmp_path: Path) -> None:
    c = client(short_lived)
    thread = c.start("sleep", {"seconds": "0", "result": "brief"})
    c.wait(thread.id, timeout=20)
    time.sleep(1.5)
    with pytest.raises(ClientError) as caught:
        c.download(thread.id, tmp_path / "gone")
    assert (caught.value.status, caught.value.error_id) == (410, "0401")
    assert not list(tmp_path.iterdir())


def test_files_go_as_multipart(server: Server, tmp_path: Path) -> None:
    """No built-in job takes files yet; `sleep` refuses them, naming the multipart field."""
    document = tmp_path / "doc.xml"
    document.write_bytes(b"<doc/>")
    for files in ({"documents": document}, {"documents": [b"<a/>", str(document)]}):
        with pytest.raises(ClientError) as caught:
            client(server).start("sleep", {"seconds": "0"}, files=files)  # type: ignore[arg-type]
        assert (caught.value.status, caught.value.error_id) == (400, "0201")
        assert "documents" in caught.value.message


def test_errors_carry_the_server_error(server: Server) -> None:
    with pytest.raises(ClientError) as forbidden:
        client(server, "reviewer").start("sleep")
    assert (forbidden.value.status, forbidden.value.error_id) == (403, "0101")
    assert "contributor" in forbidden.value.message
    with pytest.raises(ClientError) as missing:
        client(server).progress("0" * 32)
    assert (missing.value.status, missing.value.error_id) == (404, "0203")
    assert missing.value.request.endswith("/progress")
    with pytest.raises(ClientError) as no_group:
        client(server, group="nosuchgroup").list_threads()
    assert (no_group.value.status, no_group.value.error_id) == (404, "0202")
    with pytest.raises(ClientError) as bad:
        client(server).start("sleep", {"seconds": "nan"})
    assert (bad.value.status, bad.value.error_id) == (400, "0201")
    assert "seconds" in bad.value.message
    with pytest.raises(ClientError) as unauthenticated:
        Client(server.url, username="contributor", password="wrong", group="dev").list_threads()
    assert (unauthenticated.value.status, unauthenticated.value.error_id) == (401, "0100")


def test_connection_failure() -> None:
    with pytest.raises(ConnectionFailed):
        Client(f"http://127.0.0.1:{free_port()}", username="x", password="y").list_threads()


def test_list(server: Server) -> None:
    c = client(server)
    thread = c.start("sleep", {"seconds": "0"})
    c.wait(thread.id, timeout=20)
    found = c.list_threads("all", pagesize=1000)
    assert thread.id in {t.id for t in found.threads}
    assert found.total >= len(found.threads) and found.page == 1
    assert all(t.final for t in c.list_threads("finished").threads)


# -- the command line -----------------------------------------------------------------------------
def cli(server: Server, *args: str, user: str = "contributor",
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("THREADSVC_")}
    env["THREADSVC_URL"] = server.url  # --url from the environment
    command, rest = args[0], args[1:]
    return subprocess.run(
        [sys.executable, "-m", "threadsvc", "threads", command, "--user", user,
         "--password", password(user), "--group", "dev", *rest],
        check=False, capture_output=True, text=True, env=env, timeout=timeout,
    )


def test_cli_start_watch_logs_show(server: Server) -> None:
    started = cli(server, "start", "sleep", "seconds=0.5", "steps=5", "result=hi")
    assert started.returncode == 0, started.stderr
    thread_id = started.stdout.strip()
    assert HEX32.fullmatch(thread_id), started.stdout
    watched = cli(server, "watch", thread_id)
    assert watched.returncode == 0, watched.stderr
    assert "completed" in watched.stderr and "%" in watched.stderr
    assert watched.stdout == ""
    logs = cli(server, "logs", thread_id)
    assert logs.returncode == 0, logs.stderr
    lines = logs.stdout.splitlines()
    assert lines[0].endswith("Status: initialised (job sleep, by contributor)")
    assert re.fullmatch(r"\S+Z INFO Status: completed", lines[-1])
    searched = cli(server, "logs", thread_id, "--text", "STATUS: COMP")
    assert searched.returncode == 0, searched.stderr
    assert searched.stdout.splitlines() == lines[-1:]
    shown = cli(server, "show", thread_id)
    assert shown.returncode == 0 and f"id: {thread_id}" in shown.stdout
    assert "status: completed" in shown.stdout
    listed = cli(server, "list", "--status", "all")
    assert listed.returncode == 0 and thread_id in listed.stdout


def test_cli_exit_status_tells_the_final_status(server: Server) -> None:
    failing = cli(server, "start", "sleep", "seconds=0.3", "steps=3", "fail=2")
    assert failing.returncode == 0, failing.stderr
    assert cli(server, "watch", failing.stdout.strip()).returncode == 3

    long = cli(server, "start", "sleep", "seconds=30")
    thread_id = long.stdout.strip()
    cancelled = cli(server, "cancel", thread_id)
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout.startswith(thread_id)
    assert cli(server, "watch", thread_id).returncode == 4

    waited = cli(server, "start", "sleep", "seconds=0.2", "--wait")
    assert waited.returncode == 0, waited.stderr
    assert HEX32.fullmatch(waited.stdout.strip())


def test_cli_errors_exit_1(server: Server) -> None:
    forbidden = cli(server, "start", "sleep", user="reviewer")
    assert forbidden.returncode == 1
    assert "0101" in forbidden.stderr and forbidden.stdout == ""
    missing = cli(server, "show", "0" * 32)
    assert missing.returncode == 1 and "0203" in missing.stderr
    assert cli(server, "cancel", "0" * 32).returncode == 1
    env = {k: v for k, v in os.environ.items() if not k.startswith("THREADSVC_")}
    down = subprocess.run(
        [sys.executable, "-m", "threadsvc", "threads", "list", "--url",
         f"http://127.0.0.1:{free_port()}"],
        check=False, capture_output=True, text=True, env=env, timeout=60,
    )
    assert down.returncode == 1 and down.stderr.startswith("error:")


def test_cli_token_from_the_environment(server: Server, tokens: dict[str, str]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("THREADSVC_")}
    env.update(THREADSVC_URL=server.url, THREADSVC_TOKEN=tokens["contributor"])
    base = [sys.executable, "-m", "threadsvc", "threads"]
    started = subprocess.run([*base, "start", "--group", "dev", "sleep", "seconds=0"],
                             check=False, capture_output=True, text=True, env=env, timeout=60)
    assert started.returncode == 0, started.stderr
    # --user on the command line beats the token in the environment.
    as_reviewer = subprocess.run(
        [*base, "start", "--group", "dev", "--user", "reviewer", "--password", "reviewer-pw",
         "sleep"], check=False, capture_output=True, text=True, env=env, timeout=60,
    )
    assert as_reviewer.returncode == 1 and "0101" in as_reviewer.stderr
