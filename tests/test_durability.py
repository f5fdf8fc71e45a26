"""docs/api.md#durability on a real server killed with SIGKILL and restarted on the same SQLite file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support import Server, seed, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.chaos]


def _status(text: str) -> str:
    match = re.search(r'<thread [^>]*status="([a-z]+)"', text)
    assert match, text
    return match.group(1)


def test_sigkill_loses_nothing(tmp_path: Path) -> None:
    server = Server(tmp_path, **{"max-running": 2})
    seed(server.config)
    server.start()
    ids = []
    with server.client("admin") as http:
        for _ in range(4):
            answer = http.post(
                "/ps/service/groups/dev/threads", data={"job": "sleep", "seconds": "60", "steps": "60"}
            )
            assert answer.status_code == 202
            ids.append(re.search(r'id="([0-9a-f]{32})"', answer.text).group(1))  # type: ignore[union-attr]
        for thread_id in ids[:2]:
            wait_for(http, f"/ps/service/threads/{thread_id}/progress",
                     lambda r: 'current="1"' in r.text)
        before = {
            thread_id: http.get(f"/ps/service/threads/{thread_id}/logs").text for thread_id in ids[:2]
        }
        assert all(_status(http.get(f"/ps/service/threads/{t}").text) == "initialised" for t in ids[2:])
    server.kill()

    server.start()
    try:
        with server.client("admin") as http:
            for thread_id in ids[:2]:
                answer = http.get(f"/ps/service/threads/{thread_id}/progress")
                assert _status(answer.text) == "failed"
                assert "nterrupted" in answer.text
                logs = http.get(f"/ps/service/threads/{thread_id}/logs").text
                for event in re.findall(r"<event [^>]*>[^<]*</event>", before[thread_id]):
                    assert event in logs  # every event written before the crash is still there
                assert 'level="ERROR"' in logs
            for thread_id in ids[2:]:
                wait_for(http, f"/ps/service/threads/{thread_id}/progress",
                         lambda r: _status(r.text) == "inprogress")
            listed = http.get("/ps/service/threads", params={"status": "all"}).text
            assert all(thread_id in listed for thread_id in ids)
    finally:
        server.stop()


def test_sigterm_ends_running_threads_with_a_message(tmp_path: Path) -> None:
    server = Server(tmp_path, **{"shutdown-grace": 0.5})
    seed(server.config)
    server.start()
    with server.client("admin") as http:
        answer = http.post("/ps/service/threads", data={"job": "sleep", "seconds": "60"})
        thread_id = re.search(r'id="([0-9a-f]{32})"', answer.text).group(1)  # type: ignore[union-attr]
        wait_for(http, f"/ps/service/threads/{thread_id}", lambda r: "inprogress" in r.text)
    server.stop()  # uvicorn shuts down gracefully, then re-raises SIGTERM for its parent
    assert "Application shutdown complete" in server.log.read_text()
    server.start()
    try:
        with server.client("admin") as http:
            text = http.get(f"/ps/service/threads/{thread_id}").text
            assert _status(text) == "failed" and "shut down" in text
    finally:
        server.stop()
