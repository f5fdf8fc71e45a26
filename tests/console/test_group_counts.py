"""The administrator's groups page counts every group's threads by status with one store query,
however many groups there are (the app in this process, so the store's calls can be counted)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.console.conftest import UI
from tests.console.test_session import csrf_of
from tests.support import InProcess, password, running_server, start
from threadsvc import admin
from threadsvc.settings import Settings, load_settings
from threadsvc.store.threads import ThreadRules

GROUPS = 30


@pytest.fixture
def server(tmp_path: Path) -> Iterator[InProcess]:
    for found, _ in running_server(tmp_path, InProcess):
        anyio.run(add_groups, load_settings(found.config, environ={}))
        yield found


async def add_groups(settings: Settings) -> None:
    async with admin.opened(settings) as a:
        for n in range(GROUPS):
            await admin.add_group(a, f"g{n:02d}")
            await admin.add_member(a, f"g{n:02d}", "contributor", "contributor")


def test_every_groups_counts_come_from_one_query(
    server: InProcess, monkeypatch: pytest.MonkeyPatch,
) -> None:
    with server.client("contributor") as http:
        for n in range(GROUPS):
            start(http, f"/ps/service/groups/g{n:02d}", seconds=60, steps=60)
    calls: dict[str, int] = {}

    def counted(name: str) -> Any:
        original = getattr(ThreadRules, name)

        async def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            calls[name] = calls.get(name, 0) + 1
            return await original(self, *args, **kwargs)

        return wrapper

    with server.client(None, follow_redirects=False) as client:
        form = client.get(f"{UI}/sign-in")
        client.post(f"{UI}/sign-in", data={"csrf": csrf_of(form), "username": "admin",
                                           "password": password("admin")})
        for name in ("list_threads", "count_by_group_and_status", "count_by_status"):
            monkeypatch.setattr(ThreadRules, name, counted(name))
        page = client.get(f"{UI}/groups").text
    assert calls == {"count_by_group_and_status": 1}
    cards = page.split('<li class="card group">')[1:]
    assert len(cards) == GROUPS + 2  # and dev, other
    for card in cards:
        name = re.search(r'href="/ps/ui/groups/([a-z0-9]+)/threads"', card).group(1)  # type: ignore[union-attr]
        if name.startswith("g"):
            assert re.search(r"\b1 thread\b", card), card  # initialised or running: one each
