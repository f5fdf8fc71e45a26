"""A node started with another `secret-key` than the others (docs/api.md#durability: several nodes, one store).

The attack (or mistake): such a node served result links and access tokens that the other nodes
refused, silently. The store now keeps a fingerprint of the signing key (an HMAC of a fixed
label under the key: it tells nothing of the key), and a node whose keys do not include the
stored one refuses to start, saying why. A rotation moves the fingerprint along: a node started
with ["new", "old"] is accepted and stores the new key's fingerprint; from then on ["new"] starts
and ["old"] alone is refused.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
import pytest

from tests.support import Server, seed
from threadsvc.keys import FINGERPRINT_SETTING, key_fingerprint

pytestmark = pytest.mark.slow


def node(directory: Path, db: str, keys: list[str]) -> Server:
    return Server(directory, db=db, **{"secret-key": keys})


def refuses(server: Server) -> str:
    with pytest.raises(RuntimeError, match="server exited"):
        server.start()
    log = server.log.read_text()
    assert "secret-key" in log and "none of the configured keys" in log, log[-2000:]
    return log


def stored_fingerprint(db: Path) -> str:
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT value FROM server_settings WHERE key = ?",
                           (FINGERPRINT_SETTING,)).fetchone()
    return str(row[0])


def test_a_node_with_another_key_refuses_to_start(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    first = node(tmp_path / "a", f"sqlite:///{db}", ["the-key-long-enough-for-a-secret-key"])
    seed(first.config)
    first.start()
    try:
        for n, keys in enumerate((["another-key-long-enough-for-a-secret-key"], ["another-key-long-enough-for-a-secret-key", "yet-another-long-enough-for-a-secret-key"], ["The-key-long-enough-for-a-secret-key"])):
            log = refuses(node(tmp_path / f"bad-{n}", f"sqlite:///{db}", keys))
            for key in keys:
                assert key.strip() not in log.replace("secret-key", "")  # no key is printed
        fingerprint = stored_fingerprint(db)
        assert fingerprint == key_fingerprint("the-key-long-enough-for-a-secret-key") and "the-key-long-enough-for-a-secret-key" not in fingerprint
        assert httpx.get(f"{first.url}/health").status_code == 200  # the first one serves on
    finally:
        first.stop()


def test_a_rotation_moves_the_fingerprint_along(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    url = f"sqlite:///{db}"
    old = node(tmp_path / "old", url, ["old-key-long-enough-for-a-secret-key"])
    seed(old.config)
    old.start()
    old.stop()
    adding = node(tmp_path / "adding", url, ["old-key-long-enough-for-a-secret-key", "new-key-long-enough-for-a-secret-key"])  # the new one verifies only
    adding.start()
    adding.stop()
    assert stored_fingerprint(db) == key_fingerprint("old-key-long-enough-for-a-secret-key")
    signing = node(tmp_path / "signing", url, ["new-key-long-enough-for-a-secret-key", "old-key-long-enough-for-a-secret-key"])  # the new one signs
    signing.start()
    signing.stop()
    assert stored_fingerprint(db) == key_fingerprint("new-key-long-enough-for-a-secret-key")
    refuses(node(tmp_path / "stale", url, ["old-key-long-enough-for-a-secret-key"]))  # a node left behind says so
    done = node(tmp_path / "done", url, ["new-key-long-enough-for-a-secret-key"])  # the old key dropped
    done.start()
    done.stop()


def test_a_generated_key_is_fingerprinted_too(tmp_path: Path) -> None:
    """Without `secret-key`, the key is generated once and kept in the store; configuring
    another key later, by mistake, is refused like any other mismatch."""
    db = tmp_path / "shared.db"
    first = Server(tmp_path / "a", db=f"sqlite:///{db}")
    first.config.write_text("\n".join(line for line in first.config.read_text().splitlines()
                                      if not line.startswith("secret-key")) + "\n")
    seed(first.config)
    first.start()
    first.stop()
    refuses(node(tmp_path / "b", f"sqlite:///{db}", ["a-configured-key-long-enough-for-a-secret-key"]))
