"""The server's secret keys: the configured ones, or one generated once and kept in the store.

Every node of a store must sign with a key the others accept (result links, access tokens,
console sessions), so a node refuses to start when none of its keys is the one the store
says the others sign with.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets

from threadsvc.settings import Settings, SettingsError
from threadsvc.store.base import Store

FINGERPRINT_SETTING = "secret-key-fingerprint"
SHORT_FINGERPRINT = 16  # hex digits shown to operators: 64 bits, enough to tell keys apart

log = logging.getLogger(__name__)


async def secret_keys(settings: Settings, store: Store) -> tuple[str, ...]:
    """The configured keys, or one generated once and kept in the store (shared by nodes)."""
    if settings.secret_key:
        return settings.secret_key
    return (await store.get_or_put_setting("secret-key", secrets.token_urlsafe(48)),)


def key_fingerprint(key: str) -> str:
    """A keyed hash of a fixed label: the same for the same key, and tells nothing of it."""
    return hmac.new(key.encode(), b"threadsvc secret-key fingerprint", hashlib.sha256).hexdigest()


def short_fingerprint(key: str) -> str:
    """What `threadsvc key fingerprint` prints and `serve` logs: compare nodes' keys by it."""
    return key_fingerprint(key)[:SHORT_FINGERPRINT]


async def check_key_fingerprint(store: Store, keys: tuple[str, ...]) -> None:
    """Refuse to serve with keys that share none with the nodes that served this store before:
    links and tokens one signs, the others would refuse. The store keeps the fingerprint of the
    last starting node's signing key, so that a rotation (add the new key first in the list,
    keeping the old one; later drop the old) moves it along; a node still without the new key
    then refuses to start rather than refuse what the others sign."""
    signing = key_fingerprint(keys[0])
    stored = await store.get_or_put_setting(FINGERPRINT_SETTING, signing)
    if not any(hmac.compare_digest(stored, key_fingerprint(key)) for key in keys):
        raise SettingsError(
            "setting 'secret-key': none of the configured keys is the one the other nodes of "
            "this store sign with; give that key (first to sign, or after the new one while "
            "rotating), or see 'secret-key' in the README"
        )
    if stored != signing:
        await store.put_setting(FINGERPRINT_SETTING, signing)
    log.info("signing with the secret-key of fingerprint %s%s", short_fingerprint(keys[0]),
             f" ({len(keys) - 1} more verify)" if len(keys) > 1 else "")
