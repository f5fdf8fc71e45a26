"""Webhook secrets and replays (threadsvc/delivery/, docs/webhooks.md).

A one-character secret was accepted, and the only signature covered the body: a delivery
captured once verified again at any time and under any `X-Threadsvc-Delivery`, so a receiver
that skips repeated ids took it as new. Now a new webhook's secret has at least 16 characters
(however the form is sent, group or server webhook), and each attempt also carries
`X-Threadsvc-Timestamp` and `X-Threadsvc-Signature-V2: t=…,v1=…` over timestamp, delivery id
and body. The receiver here is the one docs/webhooks.md gives, run as printed there: it
accepts every genuine delivery and refuses the captured ones replayed under another id,
later, or with another body. A webhook stored with a short secret before the rule is still
delivered, signed both ways."""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.hostile.payloads import GROUP, check_error, finish
from tests.support import Receiver, Server, running_server, seed
from threadsvc import admin
from threadsvc.models import now_ms
from threadsvc.settings import load_settings

pytestmark = pytest.mark.slow

DOCS = Path(__file__).parents[2] / "docs" / "webhooks.md"
SECRET = "a-long-enough-secret-for-hooks"


def documented_verify() -> Callable[..., bool]:
    """The `verify` of docs/webhooks.md, exactly as printed."""
    text = DOCS.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.DOTALL)
    block = next(b for b in blocks if "def verify" in b)
    namespace: dict[str, Any] = {}
    exec(compile(block, str(DOCS), "exec"), namespace)  # noqa: S102 (our own documentation)
    verify: Callable[..., bool] = namespace["verify"]
    return verify


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, str]]]:
    yield from running_server(tmp_path_factory.mktemp("hooks"), **{
        "webhook-allow-private": True, "max-running": 16})


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as found:
        yield found


SHORT = ["k", "k" * 15, "é" * 15, "\u4e2d" * 15, "k" * 14 + "\t", "1234567890abcde"]
LONG_ENOUGH = ["k" * 16, "é" * 16, "\u4e2d" * 16, " " * 15 + "k", "k" * 1000]


@pytest.mark.parametrize("where", [f"{GROUP}/webhooks", "/ps/service/webhooks"])
def test_short_secrets_are_refused(server: Server, where: str) -> None:
    with server.client("admin") as http:
        for secret in SHORT:
            fields = {"url": "http://127.0.0.1:9/x", "secret": secret}
            check_error(http.post(where, data=fields), 400, "0201", "secret")
            multipart = {k: (None, v.encode()) for k, v in fields.items()}
            check_error(http.post(where, files=multipart), 400, "0201", "secret")
        for secret in LONG_ENOUGH:
            made = http.post(where, data={"url": "http://127.0.0.1:9/x", "secret": secret})
            assert made.status_code == 201, (secret, made.text)
            assert http.delete(made.headers["location"]).status_code == 204


def test_captured_deliveries_do_not_replay(server: Server, receiver: Receiver) -> None:
    verify = documented_verify()
    with server.client("manager") as http:
        made = http.post(f"{GROUP}/webhooks", data={
            "url": receiver.url(), "secret": SECRET, "events": "all"})
        assert made.status_code == 201, made.text
        try:
            threads = [http.post(f"{GROUP}/threads", data={
                "job": "sleep", "seconds": "0.1", "steps": "2"}).text.split('id="', 1)[1][:32]
                for _ in range(6)]
            for tid in threads:
                finish(http, tid)
            # inprogress and completed of each, at least
            received = [(r.headers, r.body) for r in receiver.wait(None, 12, timeout=20)]
        finally:
            http.delete(made.headers["location"])
    ids = [headers["X-Threadsvc-Delivery"] for headers, _ in received]
    assert len(set(ids)) == len(ids)
    for headers, body in received:
        assert verify(headers, body, SECRET), dict(headers)
        assert not verify(headers, body, "another-secret-of-16")
        stamp = int(headers["X-Threadsvc-Timestamp"])
        assert abs(stamp - time.time()) < 120  # signed when sent
        # the body signature alone still verifies on a replay: why V2 exists
        body_mac = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert headers["X-Threadsvc-Signature"] == f"sha256={body_mac}"
        for replay in replays(headers, body):
            assert not verify(*replay, SECRET), replay[0]
        assert not verify(headers, body, SECRET, now=stamp + 301)
        assert not verify(headers, body, SECRET, now=stamp - 301)
        assert verify(headers, body, SECRET, now=stamp + 299)


def replays(headers: Any, body: bytes) -> Iterator[tuple[dict[str, str], bytes]]:
    """A captured delivery resent: under another id, with a later timestamp (its old
    signature), with another body, and with the V2 header missing or mangled."""
    base = {k: v for k, v in headers.items()}
    stamp = base["X-Threadsvc-Timestamp"]
    yield {**base, "X-Threadsvc-Delivery": "0" * 32}, body
    yield {**base, "X-Threadsvc-Delivery": base["X-Threadsvc-Delivery"].upper()}, body
    later = str(int(stamp) + 3600)
    v2 = base["X-Threadsvc-Signature-V2"]
    yield {**base, "X-Threadsvc-Timestamp": later,
           "X-Threadsvc-Signature-V2": v2.replace(f"t={stamp}", f"t={later}")}, body
    yield {**base, "X-Threadsvc-Timestamp": later}, body
    yield base, body.replace(b"completed", b"failed") + b" "
    yield base, body + b"\n"
    yield {k: v for k, v in base.items() if k != "X-Threadsvc-Signature-V2"}, body
    yield {**base, "X-Threadsvc-Signature-V2": f"t={stamp}"}, body
    yield {**base, "X-Threadsvc-Signature-V2": base["X-Threadsvc-Signature"]}, body


def test_a_webhook_stored_with_a_short_secret_is_still_delivered(
    tmp_path: Path, receiver: Receiver
) -> None:
    server = Server(tmp_path, **{"webhook-allow-private": True})
    seed(server.config)
    settings = load_settings(server.config, environ={})

    async def store_old_webhook() -> None:
        async with admin.opened(settings) as opened:
            await opened.store.create_webhook(240, receiver.url(), "old", "final", "manager",
                                              now_ms())

    anyio.run(store_old_webhook)
    server.start()
    try:
        with server.client("contributor") as http:
            started = http.post(f"{GROUP}/threads", data={"job": "sleep", "seconds": "0"})
            finish(http, started.text.split('id="', 1)[1][:32])
        [(headers, body)] = [(r.headers, r.body) for r in receiver.wait(None, 1, timeout=20)]
        assert documented_verify()(headers, body, "old")
        mac = hmac.new(b"old", body, hashlib.sha256).hexdigest()
        assert headers["X-Threadsvc-Signature"] == f"sha256={mac}"
    finally:
        server.stop()
