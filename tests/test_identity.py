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
from threadsvc.errors import AccountLocked, AuthenticationFailed
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


async def test_polling_with_a_verified_password_writes_nothing(
    ids: Identity, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each attempt is reserved in the store before its password is checked, but a password
    verified in the last VERIFIED_TTL seconds costs no reservation: only a read, so that a
    locked account is still refused."""
    await ids.add_user("poller", "pw", False)
    writes: list[str] = []
    for name in ("reserve_login_attempt", "clear_login_failures"):
        real = getattr(ids.store, name)

        async def spy(*args: object, _real: object = real, _name: str = name) -> object:
            writes.append(_name)
            return await _real(*args)  # type: ignore[operator]

        monkeypatch.setattr(ids.store, name, spy)
    await ids.check_password("poller", "pw", "10.0.0.1")
    assert writes == ["reserve_login_attempt", "clear_login_failures"]
    for _ in range(50):
        await ids.check_password("poller", "pw", "10.0.0.1")
    assert len(writes) == 2
    # a lock taken meanwhile (by guesses on another node, say) still refuses the poller
    await ids.store.reserve_login_attempt("poller", "", identity.now_ms(), 60_000, 1)
    with pytest.raises(AccountLocked):
        await ids.check_password("poller", "pw", "10.0.0.1")


async def test_a_changed_password_is_not_remembered(ids: Identity) -> None:
    await ids.add_user("changer", "old", False)
    await ids.check_password("changer", "old")
    await ids.set_password("changer", "new")
    with pytest.raises(AuthenticationFailed):
        await ids.check_password("changer", "old")  # remembered, but for the old version
    assert (await ids.check_password("changer", "new")).credential_version == 1


async def test_at_most_the_limit_is_checked_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SQLiteStore(tmp_path / "limit.db")
    await store.open()
    try:
        ids = Identity(store, Settings(lockout_attempts=5), ("key",))
        await ids.add_user("target", "right", False)
        checks: list[str] = []
        verify = identity.verify_password

        def counting(password: str, stored: str) -> bool:
            checks.append(password)
            return verify(password, stored)

        monkeypatch.setattr(identity, "verify_password", counting)
        outcomes: list[str] = []

        async def guess(n: int) -> None:
            try:
                await ids.check_password("target", "right" if n == 97 else f"g{n}")
                outcomes.append("ok")
            except AccountLocked:
                outcomes.append("locked")
            except AuthenticationFailed:
                outcomes.append("wrong")

        async with anyio.create_task_group() as tasks:
            for n in range(100):
                tasks.start_soon(guess, n)
        assert len(checks) <= 5 and outcomes.count("locked") >= 95
    finally:
        await store.close()
