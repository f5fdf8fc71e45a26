"""`files-shared`: proof, at start-up, that a node's `data-dir` is the directory the other nodes
of its PostgreSQL store use (one every node mounts), before it serves files kept there.

The store names one marker (`files-shared-marker`: a key and its random content). A starting
node writes a marker of its own through the storage and offers it to the store, which keeps the
first one offered (an atomic insert); then the node reads back the marker the store names.
Two nodes starting at once both write theirs, one is kept, and each reads that one: both pass
when they share the directory, and a node with a directory of its own cannot read it and
refuses to start. A node whose marker was not kept deletes its own.
"""

from __future__ import annotations

import secrets

import anyio

from threadsvc.errors import FileMissing
from threadsvc.files.base import FileStorage
from threadsvc.files.scratch import Scratch
from threadsvc.settings import SettingsError
from threadsvc.store.base import Store

MARKER_SETTING = "files-shared-marker"


async def check_shared(storage: FileStorage, store: Store, scratch: Scratch) -> None:
    """Raises SettingsError when this node cannot read the marker the store names."""
    own_key = f"check/shared-{secrets.token_hex(8)}"
    own_content = secrets.token_hex(16)
    written = scratch.file("shared-marker")
    try:
        await anyio.Path(written).write_text(own_content)
        await storage.put(own_key, written)
    finally:
        await anyio.Path(written).unlink(missing_ok=True)
    kept = await store.get_or_put_setting(MARKER_SETTING, f"{own_key} {own_content}")
    key, _, content = kept.partition(" ")
    if key != own_key:
        await storage.delete(own_key)
    try:
        found = b"".join([chunk async for chunk in storage.read(key)])
    except (FileMissing, ValueError):
        found = None
    if found is None or found.decode(errors="replace") != content:
        raise SettingsError(
            f"setting 'files-shared': data-dir {storage_root(storage)} does not hold the marker "
            f"{key} that another node of this store wrote, so it is not the directory the other "
            "nodes share; mount that directory here, or use files = \"postgres\" or \"s3\". If "
            "every node's data-dir was emptied on purpose, delete the store's setting "
            f"'{MARKER_SETTING}' (DELETE FROM server_settings WHERE key = '{MARKER_SETTING}')"
        )


def storage_root(storage: FileStorage) -> str:
    root = getattr(storage, "root", None)
    return str(root) if root is not None else storage.kind
