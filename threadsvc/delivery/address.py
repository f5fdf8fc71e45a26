"""Which addresses webhooks may reach, and what a webhook URL may be.

Unless `webhook-allow-private`, a URL whose host is, or resolves to, any address that is not
public is refused at registration and at each delivery (a refused attempt counts as a failed
one, code 0). The delivery then connects to the very address it checked (the Host header and
TLS name stay the URL's), so a DNS answer that changes in between cannot redirect it to a
private address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket

import httpx

from threadsvc.errors import BadParameter

MAX_URL = 2000


class AddressRefused(Exception):
    """The URL's host is, or resolves to, an address that webhooks may not reach."""


_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def refusal(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why webhooks may not reach `address`, or None when it is a public unicast address."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return refusal(embedded)
    for kind in ("loopback", "unspecified", "link_local", "multicast", "private", "reserved"):
        if getattr(address, f"is_{kind}"):
            return f"is a {kind.replace('_', '-')} address"
    if not address.is_global:
        return "is not a public address"  # shared (100.64/10) and the like
    return None


async def resolve_public(url: httpx.URL) -> str:
    """The address to connect to for `url`: every address its host has must be public.

    Raises AddressRefused. Resolves with the event loop (never blocking it)."""
    host = url.raw_host.decode("ascii")
    if host == "localhost" or host.endswith(".localhost"):
        raise AddressRefused(f"host '{host}' is a loopback name")
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [literal]
    else:
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
        except (OSError, UnicodeError) as exc:
            raise AddressRefused(f"host '{host}' cannot be resolved ({exc})") from None
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
        if not addresses:
            raise AddressRefused(f"host '{host}' has no address")
    for address in addresses:
        why = refusal(address)
        if why is not None:
            raise AddressRefused(f"host '{host}' {why} ({address})")
    return str(addresses[0])


def parse_url(text: str) -> httpx.URL:
    """A webhook URL: http or https, with a host, without credentials. Raises BadParameter."""
    if not text:
        raise BadParameter("url", "is required")
    if len(text) > MAX_URL:
        raise BadParameter("url", f"is longer than {MAX_URL} characters")
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in text):
        raise BadParameter("url", "must not hold spaces or control characters")
    try:
        url = httpx.URL(text)
        url.raw_host.decode("ascii")
    except (httpx.InvalidURL, UnicodeError, ValueError):
        raise BadParameter("url", "is not a valid URL") from None
    if url.scheme not in ("http", "https"):
        raise BadParameter("url", "must be an http or https URL")
    if not url.raw_host:
        raise BadParameter("url", "must name a host")
    if url.userinfo:
        raise BadParameter("url", "must not hold credentials (the secret signs deliveries)")
    if url.port is not None and not 0 < url.port < 65536:
        raise BadParameter("url", "has a port out of range")
    return url
