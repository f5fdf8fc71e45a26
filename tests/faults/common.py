"""What the fault tests share: reading answers, the error document of docs/api.md#errors, the server's
resources as /proc shows them, and the state of a store read directly after the server is gone."""

from __future__ import annotations

import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from lxml import etree

from tests.support import FINAL
from threadsvc.xml.schemas import validate

XML = "application/xml;charset=utf-8"
_VALIDATE = threading.Lock()  # validate() is for one OS thread at a time


def check_error(answer: httpx.Response, code: int, error_id: str) -> str:
    """The answer is the error document of docs/api.md#errors with that status and id; its message."""
    assert answer.status_code == code, f"{answer.status_code}: {answer.text[:300]}"
    assert answer.headers["content-type"] == XML
    with _VALIDATE:
        validate(answer.content)
    root = etree.fromstring(answer.content)
    assert root.tag == "error" and root.get("id") == error_id, answer.text
    assert root.findtext("request", "").startswith("/"), answer.text
    message = root.findtext("message", "")
    assert message.strip(), answer.text
    return message


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    """Wait for `predicate`; how long it took."""
    begin = time.monotonic()
    while not predicate():
        if time.monotonic() - begin > timeout:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.1)
    return time.monotonic() - begin


def all_final(http: httpx.Client, ids: list[str], timeout: float) -> dict[str, str]:
    """Wait until no thread is active and every one of `ids` is final; their statuses (an
    administrator's `http`)."""
    statuses: dict[str, str] = {}

    def done() -> bool:
        active = http.get("/ps/service/threads", params={"pagesize": "1"}).text
        if 'total="0"' not in active:
            return False
        page = 1
        while True:  # every page: a soak makes thousands
            listed = http.get("/ps/service/threads", params={
                "status": "all", "pagesize": "1000", "page": str(page)}).text
            found = re.findall(r'<thread id="([0-9a-f]{32})"[^>]*status="([a-z]+)"', listed)
            statuses.update(found)
            if len(found) < 1000:
                break
            page += 1
        return all(statuses.get(t) in FINAL for t in ids)

    wait_until(done, timeout, "every thread to end")
    return {t: statuses[t] for t in ids}


# -- the server process -----------------------------------------------------------------------
def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def socket_fds(pid: int) -> int:
    """Open sockets and pipes (not files: the SQLite store's reader connections, which its pool
    opens as it needs them and keeps, are not a leak)."""
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        count += target.startswith(("socket:", "pipe:"))
    return count


def os_threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def tcp_connections(port: int) -> int:
    """Established TCP connections to `port` on 127.0.0.1 (server side), from /proc/net/tcp."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state = fields[1], fields[3]
        if state == "01" and int(local.split(":")[1], 16) == port:
            count += 1
    return count


# -- the store, read after the server has gone ------------------------------------------------
def sqlite_statuses(path: Path) -> dict[str, str]:
    conn = sqlite3.connect(path)
    try:
        return dict(conn.execute("SELECT id, status FROM threads").fetchall())
    finally:
        conn.close()
