"""Password checks under a burst of sign-ins, in process on a real SQLite store."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

from threadsvc import identity
from threadsvc.errors import AuthenticationFailed
from threadsvc.identity import PASSWORD_CHECKS, Identity
from threadsvc.settings import Settings
from threadsvc.store.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def ids(tmp_path: Path) -> AsyncIterator[Identity]:
    store = SQLiteStore(tmp_path / "store.db")
    await store.open()
    try:
        yield Identity(store, Settings(lockout_attempts=1000), ("key",))
    finally:
        await store.close()


async def test_a_burst_of_unknown_names_runs_few_scrypts_at_once(
    ids: Identity, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each unknown name is checked against a dummy hash (so that it takes as long as a known
    one); forty at once must queue for PASSWORD_CHECKS threads of their own, not take forty of
    anyio's, which jobs and file writes share."""
    lock = threading.Lock()
    running = peak = 0
    default_borrowed: list[float] = []
    verify = identity.verify_password

    def counting(password: str, stored: str) -> bool:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        try:
            time.sleep(0.02)  # scrypt is slow; make the overlap certain
            return verify(password, stored)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(identity, "verify_password", counting)
    failed = 0

    async def sign_in(n: int) -> None:
        nonlocal failed
        try:
            await ids.check_password(f"nobody-{n}", "guess")
        except AuthenticationFailed:
            failed += 1

    async with anyio.create_task_group() as tasks:
        for n in range(40):
            tasks.start_soon(sign_in, n)
        await anyio.sleep(0.05)
        default_borrowed.append(anyio.to_thread.current_default_thread_limiter().borrowed_tokens)
    assert failed == 40
    assert 2 <= peak <= PASSWORD_CHECKS
    assert default_borrowed == [0]
