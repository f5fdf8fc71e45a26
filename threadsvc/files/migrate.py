"""Moving every file to another storage (`threadsvc files migrate`), and the storage the store
records, which every node checks at start.

The copy is idempotent: a key the target already holds with the source's size is skipped (a
put is whole or nothing, so a file of the right size is that file), so a migration stopped
anywhere is resumed by running it again. Only once every key is there does the store record the
new storage; from then on a node configured for another storage refuses to start, rather than
serve results it cannot find or write new ones where the others will not look.

Threat model: keys come from the storages themselves (made by the server); the source is only
read, never changed or emptied (delete it by hand once the nodes run on the target).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anyio

from threadsvc.files.base import FileStorage, is_key
from threadsvc.settings import SettingsError
from threadsvc.store.base import Store
from threadsvc.store.transfer import IMPORTING

SETTING = "files"  # the store's record of where its files are
PREFIXES = ("results/", "uploads/")


async def check_recorded(store: Store, kind: str) -> None:
    """Refuse to start on another storage than the one this store's files are in (the first
    node to start records its own; a store that has threads but no record comes from before
    the record, when every file was under data-dir: local)."""
    first = kind
    if kind != "local" and any((await store.count_by_status()).values()):
        first = "local"
    recorded = await store.get_or_put_setting(SETTING, first)
    if recorded == IMPORTING:
        raise SettingsError(
            "an import into this store has not finished: run 'threadsvc import' again with "
            "the whole dump"
        )
    if recorded != kind:
        shared = " with files-shared = true" if recorded == "local" else ""
        raise SettingsError(
            f"setting 'files': this store's files are in '{recorded}', not '{kind}'; set "
            f"files = \"{recorded}\"{shared}, or move them with 'threadsvc files migrate "
            f"--to {kind}' run with files = \"{recorded}\""
        )


@dataclass(frozen=True)
class Step:
    """One key done: the `n`th of `total`, `copied` (else already there), and the bytes
    copied so far."""

    n: int
    total: int
    key: str
    size: int
    copied: bool
    copied_bytes: int


async def migrate(store: Store, source: FileStorage, target: FileStorage, scratch: Path,
                  report: Callable[[Step], None]) -> list[str]:
    """Copy every upload and result from `source` to `target`, then record `target` as this
    store's storage. `scratch`: a directory for one file at a time, when neither storage
    keeps files on this disk. Returns what the source listed that is no file key (a stray
    file under data-dir), left where it is."""
    recorded = await store.get_or_put_setting(SETTING, source.kind)
    if recorded not in (source.kind, target.kind):
        raise SettingsError(
            f"this store's files are in '{recorded}': migrate from there (set files = "
            f"{recorded})"
        )
    listed = sorted([key for prefix in PREFIXES async for key in source.keys(prefix)])
    keys = [key for key in listed if is_key(key)]
    copied_bytes = 0
    for n, key in enumerate(keys, 1):
        size = await source.size(key)
        if size is None:  # deleted since listed (the purge): nothing to move
            continue
        present = await target.size(key) == size
        if not present:
            await _copy(source, target, key, scratch)
            copied_bytes += size
        report(Step(n, len(keys), key, size, not present, copied_bytes))
    await store.put_setting(SETTING, target.kind)
    return [key for key in listed if not is_key(key)]


async def _copy(source: FileStorage, target: FileStorage, key: str, scratch: Path) -> None:
    in_place = source.local_path(key)
    if in_place is not None and target.local_path(key) is None:
        await target.put(key, in_place)  # only a local target moves its source: this one reads
        return
    part = scratch / f"{uuid.uuid4().hex}.migrate"
    try:
        await source.fetch(key, part)
        await target.put(key, part)
    finally:
        with contextlib.suppress(FileNotFoundError):
            await anyio.Path(part).unlink()
