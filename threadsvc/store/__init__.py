"""Stores: where threads, logs and identities live. `make_store` picks one from the URL."""

from __future__ import annotations

from threadsvc.settings import Settings, SettingsError
from threadsvc.store.base import Store


def make_store(settings: Settings) -> Store:
    path = settings.sqlite_path
    if path is not None:
        from threadsvc.store.sqlite import SQLiteStore

        return SQLiteStore(path)
    if settings.db.startswith(("postgresql://", "postgres://")):
        raise SettingsError("the PostgreSQL store is not built yet; use db = 'sqlite:///FILE'")
    raise SettingsError(f"setting 'db': unsupported URL {settings.db!r}")
