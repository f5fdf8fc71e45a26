"""How a delivery is signed: the body alone, and the attempt's timestamp with the delivery id
and the body (docs/webhooks.md tells receivers how to check them)."""

from __future__ import annotations

import hashlib
import hmac


def signature(secret: str, body: bytes) -> str:
    """`sha256=HEX`: HMAC-SHA256 of the exact body, keyed with the secret's UTF-8 bytes."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def timed_signature(secret: str, timestamp: int, delivery_id: str, body: bytes) -> str:
    """`t=TIMESTAMP,v1=HEX`: HMAC-SHA256 of `TIMESTAMP.DELIVERY_ID.BODY`, keyed as above.

    The body signature alone lets a captured delivery be replayed at any time, and under any
    delivery id (a receiver that ignores repeats would take it as new); this one binds the
    body to its delivery id and to the moment of the attempt, which a receiver checks against
    its clock (docs/webhooks.md)."""
    signed = f"{timestamp}.{delivery_id}.".encode("ascii") + body
    mac = hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def signed_headers(secret: str, delivery_id: str, body: bytes, timestamp: int) -> dict[str, str]:
    """The signature headers of one attempt; `timestamp` in whole seconds since the epoch."""
    return {
        "X-Threadsvc-Signature": signature(secret, body),
        "X-Threadsvc-Timestamp": str(timestamp),
        "X-Threadsvc-Signature-V2": timed_signature(secret, timestamp, delivery_id, body),
    }
