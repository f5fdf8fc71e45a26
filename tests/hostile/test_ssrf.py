"""Server-side request forgery through webhooks (docs/api.md#webhooks): URLs naming loopback, private,
link-local, metadata, unspecified and reserved addresses, in every spelling a resolver
accepts (one number, hex, octal, short forms, IPv4-mapped and NAT64 IPv6, names that resolve
to loopback), are refused at registration (400, error 0201, naming `url`, nothing kept), with
the default `webhook-allow-private = false`. At delivery, the address is checked again (a
webhook registered while private addresses were allowed is never delivered once they are not)
and a redirect is never followed, so a public receiver cannot bounce a delivery inward.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from lxml import etree

from tests.hostile.payloads import GROUP, check_error, still_serving
from tests.support import Receiver, Server, running_server, seed, wait_for

pytestmark = pytest.mark.slow

HOOKS = f"{GROUP}/webhooks"
SERVER_HOOKS = "/ps/service/webhooks"

PRIVATE = [
    "http://127.0.0.1/", "http://127.0.0.1:8080/hook", "http://127.255.255.254/",
    "http://[::1]/", "http://[::1]:8080/", "http://[0:0:0:0:0:0:0:1]/",
    "http://169.254.169.254/latest/meta-data/", "http://169.254.169.254/computeMetadata/v1/",
    "http://[fd00:ec2::254]/latest/meta-data/",  # AWS's IPv6 metadata address
    "http://100.100.100.200/latest/meta-data/",  # Alibaba's (shared address space)
    "http://10.0.0.1/", "http://10.255.255.255/", "http://172.16.0.1/", "http://172.31.1.1/",
    "http://192.168.0.1/", "http://0.0.0.0/", "http://0/", "http://[::]/",
    "http://2130706433/",  # 127.0.0.1 as one decimal number
    "http://0x7f000001/",  # as one hex number
    "http://0x7f.0x0.0x0.0x1/",  # hex parts
    "http://0177.0.0.1/",  # octal
    "http://017700000001/",  # one octal number
    "http://127.1/", "http://127.0.1/",  # short forms
    "http://3232235521/",  # 192.168.0.1
    "http://0xa9fea9fe/",  # 169.254.169.254
    "http://[::ffff:127.0.0.1]/", "http://[::ffff:7f00:1]/", "http://[::ffff:a9fe:a9fe]/",
    "http://[0:0:0:0:0:ffff:10.0.0.1]/", "http://[64:ff9b::127.0.0.1]/",
    "http://[2002:7f00:1::]/",  # 6to4 of 127.0.0.1
    "http://[fe80::1]/", "http://[fc00::1]/", "http://[ff02::1]/",
    "http://224.0.0.1/", "http://255.255.255.255/", "http://240.0.0.1/",
    "http://localhost/", "http://LOCALHOST:8080/", "http://localhost./", "http://a.localhost/",
    "https://localhost:8443/x", "http://ip6-localhost/",
]


@pytest.fixture(scope="module")
def lenient(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with `webhook-allow-private = true`, to reach receivers on 127.0.0.1."""
    for server, _ in running_server(tmp_path_factory.mktemp("lenient"),
                                    **{"webhook-allow-private": True}):
        yield server


def webhook_urls(server: Server, where: str = HOOKS) -> list[str]:
    with server.client("admin") as http:
        listed = http.get(where)
    assert listed.status_code == 200, listed.text
    return [str(w.get("url")) for w in etree.fromstring(listed.content)]


# -- registration -----------------------------------------------------------------------------
@pytest.mark.parametrize("url", PRIVATE)
def test_private_addresses_are_refused_at_registration(server: Server, url: str) -> None:
    for user, where in (("manager", HOOKS), ("admin", SERVER_HOOKS)):
        with server.client(user) as http:
            response = http.post(where, data={"url": url, "secret": "a-webhook-secret"})
        check_error(response, 400, "0201", "'url'")
        assert webhook_urls(server, where) == []


@pytest.mark.parametrize("url", ["file:///etc/passwd", "gopher://127.0.0.1:25/", "ftp://8.8.8.8/",
                                 "http://user:pw@8.8.8.8/", "dict://127.0.0.1:11211/",
                                 "http://8.8.8.8:0/", "http://8.8.8.8:99999/", "//8.8.8.8/"])
def test_other_schemes_ports_and_credentials_are_refused(server: Server, url: str) -> None:
    with server.client("manager") as http:
        check_error(http.post(HOOKS, data={"url": url, "secret": "a-webhook-secret"}), 400, "0201", "'url'")
    assert webhook_urls(server) == []


def test_a_public_address_is_accepted(server: Server) -> None:
    """The check refuses addresses, not webhooks: a public literal is registered (and deleted
    at once, before any thread could make a delivery)."""
    with server.client("admin") as http:
        response = http.post(SERVER_HOOKS, data={"url": "https://93.184.215.14/hook",
                                                 "secret": "a-webhook-secret"})
        assert response.status_code == 201, response.text
        assert http.delete(response.headers["location"]).status_code == 204


# -- delivery ---------------------------------------------------------------------------------
def deliveries(server: Server, location: str) -> list[dict[str, str]]:
    with server.client("manager") as http:
        response = http.get(location)
    assert response.status_code == 200, response.text
    return [dict(d.attrib) for d in etree.fromstring(response.content)]


def run_sleep(server: Server) -> str:
    with server.client("contributor") as http:
        started = http.post(f"{GROUP}/threads", data={"job": "sleep", "seconds": "0"})
        assert started.status_code == 202, started.text
        return started.text.split('id="', 1)[1][:32]


def test_a_redirect_to_a_private_address_is_never_followed(lenient: Server) -> None:
    """The receiver (standing in for a public host) answers 302 to another address: that one
    hears nothing, and the delivery stays pending with the 302 as its code, to be retried."""
    inner = Receiver()
    outer = Receiver(302, inner.url("/internal-admin"))
    try:
        with lenient.client("manager") as http:
            created = http.post(HOOKS, data={"url": outer.url(), "secret": "a-webhook-secret"})
            assert created.status_code == 201, created.text
        location = created.headers["location"]
        run_sleep(lenient)
        with lenient.client("manager") as http:
            wait_for(http, location, lambda r: b'code="302"' in r.content, timeout=20)
        time.sleep(1.5)  # any follow-up would have come by now
        assert outer.hits >= 1
        assert inner.hits == 0
        assert all(d["status"] == "pending" for d in deliveries(lenient, location))
    finally:
        with lenient.client("manager") as http:
            http.delete(created.headers["location"])
        inner.close()
        outer.close()


def test_delivery_checks_the_address_again(tmp_path: Path) -> None:
    """Registered while private addresses were allowed; the setting turned off, restarted:
    every attempt is refused before connecting (code 0) and the receiver hears nothing."""
    receiver = Receiver()
    server = Server(tmp_path, **{"webhook-allow-private": True})
    seed(server.config)
    server.start()
    try:
        with server.client("manager") as http:
            created = http.post(HOOKS, data={"url": receiver.url(), "secret": "a-webhook-secret"})
            assert created.status_code == 201, created.text
        server.stop()
        server.config.write_text(
            server.config.read_text().replace("webhook-allow-private = true\n", ""))
        server.start()
        run_sleep(server)
        with server.client("manager") as http:
            wait_for(http, created.headers["location"],
                     lambda r: b'code="0"' in r.content, timeout=20)
        assert receiver.hits == 0
        still_serving(server)
    finally:
        if server.process is not None:
            server.stop()
        receiver.close()
