"""Webhooks (docs/api.md#webhooks) against a real server and a real HTTP receiver in this process."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from lxml import etree

from tests.conftest import NewStore
from tests.support import Received, Receiver, Server, free_port, running_server, wait_for
from threadsvc.delivery import address as addresses
from threadsvc.delivery import signing
from threadsvc.delivery import worker as delivery_worker
from threadsvc.errors import BadParameter
from threadsvc.xml.schemas import validate

GROUP = "/ps/service/groups/dev/webhooks"
SERVER = "/ps/service/webhooks"
XML_TYPE = "application/xml;charset=utf-8"
KEY, SRV, LATER = "k" * 16, "server-hook-secret", "later-hook-secret"


PUBLIC = "https://threads.example.org"


def on_public(location: str) -> str:
    """A `Location` of the server below, which is on `public-url`: absolute there; its path
    (which the proxy in front would pass on) to follow it here."""
    assert location.startswith(PUBLIC + "/ps/service/"), location
    return location.removeprefix(PUBLIC)


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, new_store: NewStore
) -> Iterator[tuple[Server, dict[str, str]]]:
    """The standard world (conftest's `server` uses this one here), allowing 127.0.0.1."""
    directory = tmp_path_factory.mktemp("server")
    settings = {
        "max-running": 64,
        "webhook-allow-private": True,
        "public-url": PUBLIC,
        "db": new_store(directory),
    }
    yield from running_server(directory, **settings)


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with the default `webhook-allow-private = false`."""
    for server, _ in running_server(tmp_path_factory.mktemp("strict")):
        yield server


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver() as found:
        yield found


def unique(name: str) -> str:
    return f"/{name}-{secrets.token_hex(4)}"


def register(
    http: httpx.Client,
    url: str,
    events: str | None = None,
    where: str = GROUP,
    secret: str = "s3cret-key-16-chars",
) -> dict[str, str]:
    data = {"url": url, "secret": secret}
    if events:
        data["events"] = events
    response = http.post(where, data=data)
    assert response.status_code == 201, response.text
    return dict(etree.fromstring(response.content).attrib)


def start_sleep(http: httpx.Client, **params: str) -> str:
    response = http.post("/ps/service/groups/dev/threads", data={"job": "sleep", **params})
    assert response.status_code == 202, response.text
    return str(etree.fromstring(response.content).get("id"))


def for_thread(received: list[Received], thread_id: str) -> list[Received]:
    return [r for r in received if r.thread.get("id") == thread_id]


def error_id(response: httpx.Response) -> str | None:
    return etree.fromstring(response.content).get("id")


def deliveries(http: httpx.Client, location: str) -> list[dict[str, str]]:
    response = http.get(location)
    assert response.status_code == 200, response.text
    return [dict(d.attrib) for d in etree.fromstring(response.content)]


# -- managing webhooks ------------------------------------------------------------------------
@pytest.mark.parametrize("user", ["manager", "approver", "admin"])
def test_managers_and_administrators_register_group_webhooks(server: Server, user: str) -> None:
    with server.client(user) as http:
        response = http.post(GROUP, data={"url": "http://127.0.0.1:9/x", "secret": KEY})
        assert response.status_code == 201, response.text
        http.delete(on_public(response.headers["location"]))


@pytest.mark.parametrize("user", ["reviewer", "contributor", "outsider", "othermgr"])
def test_others_may_not_touch_group_webhooks(server: Server, user: str) -> None:
    with server.client("manager") as http:
        webhook = register(http, "http://127.0.0.1:9/x")
    with server.client(user) as http:
        for response in (
            http.post(GROUP, data={"url": "http://127.0.0.1:9/x", "secret": KEY}),
            http.post(GROUP, content=b"not even a form"),  # 403 comes before the 400
            http.get(GROUP),
            http.get(f"{GROUP}/{webhook['id']}"),
            http.delete(f"{GROUP}/{webhook['id']}"),
        ):
            assert response.status_code == 403, response.text
            assert error_id(response) == "0101"
    with server.client("manager") as http:
        assert http.delete(f"{GROUP}/{webhook['id']}").status_code == 204


def test_server_webhooks_are_for_administrators(server: Server) -> None:
    for user in ("manager", "approver", "outsider"):
        with server.client(user) as http:
            for response in (
                http.post(SERVER, data={"url": "http://127.0.0.1:9/x", "secret": KEY}),
                http.get(SERVER),
                http.get(f"{SERVER}/1"),
                http.delete(f"{SERVER}/1"),
            ):
                assert response.status_code == 403, response.text
                assert error_id(response) == "0101"
    with server.client("admin") as http:
        webhook = register(http, "http://127.0.0.1:9/server", where=SERVER)
        assert webhook["groupid"] == "-1"
        listed = etree.fromstring(http.get(SERVER).content)
        assert [w.get("id") for w in listed] == [webhook["id"]]
        # not reachable under a group, nor a group's under the server
        assert http.get(f"{GROUP}/{webhook['id']}").status_code == 404
        assert http.delete(f"{SERVER}/{webhook['id']}").status_code == 204
        group_hook = register(http, "http://127.0.0.1:9/group")
        response = http.get(f"{SERVER}/{group_hook['id']}")
        assert response.status_code == 404 and error_id(response) == "0207"
        http.delete(f"{GROUP}/{group_hook['id']}")


def test_credentials_are_required(server: Server) -> None:
    with server.client() as http:
        response = http.get(GROUP)
    assert response.status_code == 401 and error_id(response) == "0100"


def test_registration_answers_the_webhook_without_its_secret(server: Server) -> None:
    secret = "do-not-show-" + secrets.token_hex(8)
    with server.client("manager") as http:
        response = http.post(GROUP, data={"url": "http://127.0.0.1:9/a?b=1&c=2", "secret": secret})
        assert response.status_code == 201
        assert response.headers["content-type"] == XML_TYPE
        validate(response.content)
        webhook = etree.fromstring(response.content)
        assert webhook.tag == "webhook" and len(webhook) == 0
        assert webhook.get("url") == "http://127.0.0.1:9/a?b=1&c=2"
        assert webhook.get("events") == "final"  # the default
        assert webhook.get("groupid") == "240"
        assert re.fullmatch(r"[1-9][0-9]*", webhook.get("id") or "")
        assert response.headers["location"] == f"{PUBLIC}{GROUP}/{webhook.get('id')}"
        location = on_public(response.headers["location"])
        for answer in (
            response,
            http.get(location),
            http.get(GROUP),
            http.get(location, headers={"Accept": "application/json"}),
            http.get(GROUP, headers={"Accept": "application/json"}),
        ):
            assert secret.encode() not in answer.content
        got = http.get(location)
        assert got.status_code == 200 and got.headers["content-type"] == XML_TYPE
        validate(got.content)
        assert dict(etree.fromstring(got.content).attrib) == dict(webhook.attrib)
        listed = http.get(GROUP)
        validate(listed.content)
        assert webhook.get("id") in [w.get("id") for w in etree.fromstring(listed.content)]
        as_json = http.get(location, headers={"Accept": "application/json"}).json()
        assert as_json["webhook"]["url"] == "http://127.0.0.1:9/a?b=1&c=2"
        assert as_json["webhook"]["deliveries"] == []
        assert http.get(GROUP, headers={"Accept": "application/json"}).json()["webhooks"]
        # the same under /ps/api, with a suffix choosing the format
        api = http.get(f"/ps/api/groups/dev/webhooks/{webhook.get('id')}.json")
        assert api.status_code == 200 and api.json()["webhook"]["id"] == webhook.get("id")
        http.delete(location)


def test_delete_then_not_found(server: Server) -> None:
    with server.client("manager") as http:
        webhook = register(http, "http://127.0.0.1:9/x", events="all")
        location = f"{GROUP}/{webhook['id']}"
        response = http.delete(location)
        assert response.status_code == 204 and response.content == b""
        for answer in (
            http.get(location),
            http.delete(location),
            http.get(f"{GROUP}/999999"),
            http.get(f"{GROUP}/abc"),
            http.get(f"{GROUP}/{'9' * 40}"),
        ):
            assert answer.status_code == 404, answer.text
            assert error_id(answer) == "0207"
            validate(answer.content)
        assert webhook["id"] not in [w.get("id") for w in etree.fromstring(http.get(GROUP).content)]
        # a webhook of another group is not found there, even by an administrator
        other = register(http, "http://127.0.0.1:9/x")
    for user in ("othermgr", "admin"):
        with server.client(user) as http:
            response = http.get(f"/ps/service/groups/other/webhooks/{other['id']}")
            assert response.status_code == 404 and error_id(response) == "0207"
            assert (
                http.delete(f"/ps/service/groups/other/webhooks/{other['id']}").status_code == 404
            )
    with server.client("manager") as http:
        assert http.get(f"{GROUP}/{other['id']}").status_code == 200
        http.delete(f"{GROUP}/{other['id']}")
        response = http.get("/ps/service/groups/nosuchgroup/webhooks")
        assert response.status_code == 404 and error_id(response) == "0202"


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"secret": KEY}, "url"),
        ({"url": "", "secret": KEY}, "url"),
        ({"url": "ftp://127.0.0.1/x", "secret": KEY}, "url"),
        ({"url": "127.0.0.1/x", "secret": KEY}, "url"),
        ({"url": "http:///x", "secret": KEY}, "url"),
        ({"url": "http://user:pw@127.0.0.1/x", "secret": KEY}, "url"),
        ({"url": "http://127.0.0.1/a b", "secret": KEY}, "url"),
        ({"url": "http://127.0.0.1:99999/", "secret": KEY}, "url"),
        ({"url": "http://[zz]/", "secret": KEY}, "url"),
        ({"url": "http://127.0.0.1/" + "x" * 2000, "secret": KEY}, "url"),
        ({"url": "http://127.0.0.1/x"}, "secret"),
        ({"url": "http://127.0.0.1/x", "secret": "  "}, "secret"),
        ({"url": "http://127.0.0.1/x", "secret": "k" * 1001}, "secret"),
        ({"url": "http://127.0.0.1/x", "secret": "k" * 15}, "secret"),
        ({"url": "http://127.0.0.1/x", "secret": KEY, "events": "some"}, "events"),
        ({"url": "http://127.0.0.1/x", "secret": KEY, "colour": "red"}, "colour"),
    ],
)
def test_bad_fields_are_400_naming_the_field(
    server: Server, data: dict[str, str], field: str
) -> None:
    with server.client("manager") as http:
        response = http.post(GROUP, data=data)
    assert response.status_code == 400, response.text
    assert error_id(response) == "0201"
    assert f"'{field}'" in (etree.fromstring(response.content).findtext("message") or "")


def test_repeated_fields_and_other_bodies_are_400(server: Server) -> None:
    with server.client("manager") as http:
        twice = http.post(
            GROUP,
            content=b"url=http://127.0.0.1/a&url=http://127.0.0.1/b&secret=" + KEY.encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert twice.status_code == 400 and "'url'" in twice.text
        xml = http.post(GROUP, content=b"<webhook/>", headers={"Content-Type": "application/xml"})
        assert xml.status_code == 400 and error_id(xml) == "0201"
        query = http.post(f"{GROUP}?url=http://127.0.0.1/x&secret={KEY}")  # fields come from the body
        assert query.status_code == 400 and "'url'" in query.text


def test_wrong_methods_are_405_naming_the_allowed_ones(server: Server) -> None:
    with server.client("manager") as http:
        response = http.put(GROUP)
        assert response.status_code == 405 and error_id(response) == "0103"
        assert {m.strip() for m in response.headers["allow"].split(",")} >= {"GET", "POST"}
        response = http.post(f"{GROUP}/1")
        assert response.status_code == 405
        assert {m.strip() for m in response.headers["allow"].split(",")} >= {"GET", "DELETE"}


# -- addresses --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://127.1.2.3:8080/hook",
        "http://10.0.0.1/",
        "http://172.16.5.4/",
        "http://192.168.1.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://100.64.0.1/",
        "http://0.0.0.0/",
        "http://224.0.0.1/",
        "http://240.0.0.1/",
        "http://[::1]/",
        "http://[::]/",
        "http://[fe80::1]/",
        "http://[fc00::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:10.0.0.1]/",
        "http://[64:ff9b::a9fe:a9fe]/",
        "http://[2002:7f00:1::]/",
        "http://localhost/",
        "https://localhost:8443/x",
        "http://api.localhost/",
        "http://2130706433/",  # 127.0.0.1 as one number
        "http://0x7f.1/",
    ],
)
def test_private_addresses_are_refused(strict: Server, url: str) -> None:
    with strict.client("manager") as http:
        response = http.post(GROUP, data={"url": url, "secret": KEY})
        assert response.status_code == 400, response.text
        assert error_id(response) == "0201"
        assert "'url'" in response.text
        listed = etree.fromstring(http.get(GROUP).content)
        assert url not in [w.get("url") for w in listed]


def test_a_public_address_is_accepted(strict: Server) -> None:
    with strict.client("admin") as http:
        webhook = register(http, "https://8.8.8.8/hook", where=SERVER)  # never sent: no thread runs
        assert http.delete(f"{SERVER}/{webhook['id']}").status_code == 204


@pytest.mark.parametrize(
    ("address", "refused"),
    [
        ("8.8.8.8", False),
        ("2001:4860:4860::8888", False),
        ("1.1.1.1", False),
        ("127.0.0.1", True),
        ("10.1.2.3", True),
        ("100.100.0.1", True),
        ("169.254.0.1", True),
        ("192.0.2.1", True),
        ("198.18.0.1", True),
        ("224.0.0.251", True),
        ("255.255.255.255", True),
        ("::", True),
        ("::1", True),
        ("fe80::1", True),
        ("fd12::1", True),
        ("ff02::1", True),
        ("::ffff:192.168.0.1", True),
        ("::ffff:8.8.8.8", False),
        ("64:ff9b::7f00:1", True),
        ("2002:c0a8:1::", True),
        ("2001:db8::1", True),
    ],
)
def test_refusal(address: str, refused: bool) -> None:
    assert (addresses.refusal(ipaddress.ip_address(address)) is not None) is refused


def test_resolving_checks_every_address() -> None:
    async def check(url: str) -> str:
        return await addresses.resolve_public(httpx.URL(url))

    assert asyncio.run(check("http://8.8.8.8/")) == "8.8.8.8"
    assert asyncio.run(check("http://[2001:4860:4860::8888]:81/")) == "2001:4860:4860::8888"
    for url in ("http://localhost/", "http://127.0.0.1/", "http://[::1]/", "http://2130706433/"):
        with pytest.raises(addresses.AddressRefused):
            asyncio.run(check(url))


def test_parse_url() -> None:
    assert addresses.parse_url("https://h.example:8443/p?q=1").port == 8443
    for bad in ("", "h.example", "file:///etc/passwd", "http://u@h.example/", "http://h\x00/"):
        with pytest.raises(BadParameter):
            addresses.parse_url(bad)


def test_signature_and_backoff() -> None:
    body = b"<thread/>"
    expected = hmac.new(b"key", body, hashlib.sha256).hexdigest()
    assert signing.signature("key", body) == f"sha256={expected}"
    timed = hmac.new(b"key", b"1796000000.ab12.<thread/>", hashlib.sha256).hexdigest()
    assert signing.timed_signature("key", 1796000000, "ab12", body) == f"t=1796000000,v1={timed}"
    for attempts in range(1, 60):
        delay = delivery_worker.backoff(attempts)
        assert 0 <= delay <= min(delivery_worker.BACKOFF_CAP, delivery_worker.BACKOFF_BASE * 2 ** (attempts - 1))


# -- deliveries -------------------------------------------------------------------------------
TOLERANCE = 300  # seconds a receiver accepts between a delivery's timestamp and its clock


def verify_timed(headers: dict[str, str], body: bytes, secret: str) -> bool:
    """What docs/webhooks.md tells receivers to do with `X-Threadsvc-Signature-V2`."""
    fields = dict(part.split("=", 1) for part in headers["x-threadsvc-signature-v2"].split(","))
    timestamp, delivery = fields["t"], headers["x-threadsvc-delivery"]
    if timestamp != headers["x-threadsvc-timestamp"] or not timestamp.isdigit():
        return False
    if abs(time.time() - int(timestamp)) > TOLERANCE:
        return False
    signed = f"{timestamp}.{delivery}.".encode() + body
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, fields["v1"])


def check_signed(received: Received, secret: str, event: str) -> None:
    """Both signatures hold; the timed one not for the same body under another delivery id,
    nor at another time."""
    headers = {k.lower(): v for k, v in received.headers.items()}
    assert headers["content-type"] == XML_TYPE
    assert headers["x-threadsvc-event"] == event
    assert re.fullmatch(r"[0-9a-f]{32}", headers["x-threadsvc-delivery"])
    mac = hmac.new(secret.encode(), received.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["x-threadsvc-signature"], f"sha256={mac}")
    assert verify_timed(headers, received.body, secret)
    replayed = {**headers, "x-threadsvc-delivery": secrets.token_hex(16)}
    assert not verify_timed(replayed, received.body, secret)
    stamp = str(int(headers["x-threadsvc-timestamp"]) + 1)
    later = {**headers, "x-threadsvc-timestamp": stamp,
             "x-threadsvc-signature-v2": headers["x-threadsvc-signature-v2"].replace(
                 f"t={headers['x-threadsvc-timestamp']},", f"t={stamp},")}
    assert not verify_timed(later, received.body, secret)
    assert not verify_timed(headers, received.body + b" ", secret)
    validate(received.body)


def test_the_final_status_is_delivered_signed(server: Server, receiver: Receiver) -> None:
    path, secret = unique("final"), "final-" + secrets.token_hex(16)
    with server.client("manager") as http:
        webhook = register(http, receiver.url(path), secret=secret)
        thread_id = start_sleep(http, seconds="0.2", steps="2", result="hello")
        [received] = receiver.wait(path, 1)
        check_signed(received, secret, "final")
        thread = received.thread
        assert thread.tag == "thread" and thread.get("id") == thread_id
        assert thread.get("status") == "completed" and thread.get("groupid") == "240"
        assert thread.get("ended") and thread.get("started")
        assert thread.find("progress").get("current") == "2"  # type: ignore[union-attr]
        assert "node" not in thread.attrib  # the view of a non-administrator
        # with public-url set, the body links to the result, signed at delivery
        result = thread.find("result")
        assert result is not None and result.get("href", "").startswith(PUBLIC + "/ps/service/")
        href = result.get("href", "").replace(PUBLIC, server.url)
        assert httpx.get(href).text == "hello"
        location = f"{GROUP}/{webhook['id']}"
        logged = wait_for(http, location, lambda r: b'status="delivered"' in r.content).content
        validate(logged)
        [delivery] = [dict(d.attrib) for d in etree.fromstring(logged)]
        assert delivery["id"] == received.headers["x-threadsvc-delivery"]
        assert delivery["thread"] == thread_id and delivery["event"] == "final"
        assert (delivery["status"], delivery["attempts"], delivery["code"]) == (
            "delivered",
            "1",
            "204",
        )
        assert delivery["last-attempt"].endswith("Z")
        time.sleep(0.6)
        assert len(receiver.received(path)) == 1  # events=final: nothing but the final status


def test_server_webhooks_hear_every_thread(server: Server, receiver: Receiver) -> None:
    path, other_path = unique("server"), unique("other")
    with server.client("admin") as admin:
        webhook = register(admin, receiver.url(path), where=SERVER, secret=SRV)
        group_thread = start_sleep(admin, seconds="0")
        started = admin.post("/ps/service/threads", data={"job": "sleep", "seconds": "0"})
        assert started.status_code == 202
        server_thread = etree.fromstring(started.content).get("id")
        deadline = time.monotonic() + 15
        while {r.thread.get("id") for r in receiver.received(path)} < {group_thread, server_thread}:
            assert time.monotonic() < deadline, "a final status was not delivered"
            time.sleep(0.05)
        for received in receiver.received(path):
            check_signed(received, SRV, "final")
        admin.delete(f"{SERVER}/{webhook['id']}")
    with server.client("othermgr") as other:
        register(
            other, receiver.url(other_path), events="all", where="/ps/service/groups/other/webhooks"
        )
    with server.client("manager") as http:
        thread_id = start_sleep(http, seconds="0")
        wait_for(
            http,
            f"/ps/service/groups/dev/threads/{thread_id}",
            lambda r: b'status="completed"' in r.content,
        )
    time.sleep(0.6)
    assert receiver.received(other_path) == []  # another group's webhook hears nothing of dev


def test_events_all_follow_every_change_in_order(server: Server, receiver: Receiver) -> None:
    path = unique("all")
    with server.client("manager") as http:
        register(http, receiver.url(path), events="all", secret="every-change-secret")
        thread_id = start_sleep(http, seconds="0.8", steps="4", warn="2")
        got = receiver.wait(path, 4)
        time.sleep(0.6)
        got = for_thread(receiver.received(path), thread_id)
    for received in got:
        check_signed(received, "every-change-secret", received.headers["x-threadsvc-event"])
    changes = [(r.headers["x-threadsvc-event"], r.thread.get("status")) for r in got]
    assert changes == [
        ("status", "inprogress"),
        ("status", "warning"),
        ("status", "inprogress"),
        ("final", "completed"),
    ]
    first, warned, back, final = (r.thread for r in got)
    assert first.get("started") and not first.get("ended") and first.get("warnings") == "0"
    assert warned.get("warnings") == "1" and warned.findtext("message")
    assert int(back.find("progress").get("current")) >= 3  # type: ignore[union-attr, arg-type]
    assert final.get("ended") and final.find("progress").get("current") == "4"  # type: ignore[union-attr]
    assert len({r.headers["x-threadsvc-delivery"] for r in got}) == 4


def test_a_cancelled_thread_is_delivered_as_cancelled(server: Server, receiver: Receiver) -> None:
    path = unique("cancel")
    with server.client("manager") as http:
        register(http, receiver.url(path))
        thread_id = start_sleep(http, seconds="30")
        assert http.post(f"/ps/service/groups/dev/threads/{thread_id}/cancel").status_code == 200
        [received] = for_thread(receiver.wait(path, 1), thread_id)
    assert received.thread.get("status") == "cancelled"
    assert received.headers["x-threadsvc-event"] == "final"


@pytest.mark.slow  # waits on real time
def test_failures_are_retried_with_the_same_delivery_id(server: Server, receiver: Receiver) -> None:
    path, secret = unique("retry"), "retry-secret-of-16+"
    receiver.fail[path] = 2
    with server.client("manager") as http:
        webhook = register(http, receiver.url(path), secret=secret)
        location = f"{GROUP}/{webhook['id']}"
        thread_id = start_sleep(http, seconds="0")
        first, _ = receiver.wait(path, 2)
        pending = wait_for(http, location, lambda r: b'code="500"' in r.content).content
        [delivery] = [dict(d.attrib) for d in etree.fromstring(pending)]
        if delivery["status"] == "pending":  # unless the third attempt was quicker than this look
            assert delivery["attempts"] in ("1", "2") and delivery["next-attempt"]
        attempts = receiver.wait(path, 3)
        assert len(attempts) == 3 and attempts[0] == first
        assert len({r.headers["x-threadsvc-delivery"] for r in attempts}) == 1
        assert len({r.body for r in attempts}) == 1
        for received in attempts:
            check_signed(received, secret, "final")
            assert received.thread.get("id") == thread_id
        logged = wait_for(http, location, lambda r: b'status="delivered"' in r.content).content
        [delivery] = [dict(d.attrib) for d in etree.fromstring(logged)]
        assert (delivery["attempts"], delivery["code"]) == ("3", "204")
        assert delivery["id"] == attempts[0].headers["x-threadsvc-delivery"]
        assert "next-attempt" not in delivery
        time.sleep(0.6)
        assert len(receiver.received(path)) == 3


@pytest.mark.slow  # waits on real time
def test_a_pending_delivery_survives_a_restart(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/down"
    with contextlib.contextmanager(running_server)(tmp_path, **{"webhook-allow-private": True}) as (
        server,
        _,
    ):
        with server.client("manager") as http:
            webhook = register(http, url, secret=LATER)
            location = f"{GROUP}/{webhook['id']}"
            thread_id = start_sleep(http, seconds="0")
            # nothing listens: attempts fail with no connection (code 0)
            wait_for(http, location, lambda r: b'code="0"' in r.content)
        server.stop()
        receiver = Receiver(port=port)
        try:
            server.start()
            [received] = receiver.wait("/down", 1)
            check_signed(received, LATER, "final")
            assert received.thread.get("id") == thread_id
            assert received.thread.get("status") == "completed"
            with server.client("manager") as http:
                logged = wait_for(http, location, lambda r: b'status="delivered"' in r.content)
            [delivery] = [dict(d.attrib) for d in etree.fromstring(logged.content)]
            assert int(delivery["attempts"]) >= 2 and delivery["code"] == "204"
            assert delivery["id"] == received.headers["x-threadsvc-delivery"]
        finally:
            receiver.close()


@pytest.mark.slow  # waits on real time
def test_delivery_to_a_private_address_is_refused_again_at_delivery(
    tmp_path: Path, receiver: Receiver
) -> None:
    """Registered while private addresses were allowed, then the setting was turned off: every
    attempt is refused before any connection (code 0) and the receiver hears nothing."""
    path = unique("refused")
    server = Server(tmp_path, **{"webhook-allow-private": True})
    from tests.support import seed

    seed(server.config)
    server.start()
    try:
        with server.client("manager") as http:
            webhook = register(http, receiver.url(path))
        server.stop()
        server.config.write_text(
            server.config.read_text().replace("webhook-allow-private = true", "")
        )
        server.start()
        with server.client("manager") as http:
            start_sleep(http, seconds="0")
            logged = wait_for(http, f"{GROUP}/{webhook['id']}", lambda r: b'code="0"' in r.content)
        [delivery] = [dict(d.attrib) for d in etree.fromstring(logged.content)]
        assert delivery["status"] == "pending" and int(delivery["attempts"]) >= 1
        assert receiver.received(path) == []
    finally:
        if server.process is not None:
            server.stop()


def test_an_attempt_connects_to_the_address_it_checked(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With private addresses refused, an attempt resolves the host itself, checks the address
    and connects to that very address, keeping the URL's host in the Host header. (Here the
    check is told to let 127.0.0.1 pass, standing in for a public address.)"""
    from threadsvc.models import Delivery, DueDelivery, Status, Thread, Webhook
    from threadsvc.settings import Settings

    monkeypatch.setattr(addresses, "refusal", lambda address: None)
    path = unique("pinned")
    url = f"http://2130706433:{receiver.port}{path}"  # 127.0.0.1, resolved by getaddrinfo
    thread = Thread("ab" * 16, "Sleep thread", "u", 240, "sleep", {}, Status.COMPLETED, 1, 2, 3)
    due = DueDelivery(
        Delivery("cd" * 16, 1, thread.id, "final", "pending", 0, 0, None, None, 0),
        Webhook(1, 240, url, "pin", "final", "manager", 0),  # a short secret from before the rule
        thread,
    )

    async def attempt() -> int:
        async with httpx.AsyncClient(trust_env=False) as client:
            worker = delivery_worker.DeliveryWorker(None, Settings(), client=client)  # type: ignore[arg-type]
            return await worker.attempt(due)

    assert asyncio.run(attempt()) == 204
    [received] = receiver.received(path)
    assert received.headers["host"] == f"2130706433:{receiver.port}"
    check_signed(received, "pin", "final")
    assert received.thread.get("status") == "completed"
