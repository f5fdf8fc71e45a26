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
        try:
            from threadsvc.store.postgres import PostgresStore
        except ImportError as exc:
            raise SettingsError(
                f"setting 'db': a PostgreSQL URL needs psycopg 3 ({exc}); "
                "install threadsvc[postgres]"
            ) from exc
        return PostgresStore(settings.db)
    raise SettingsError(f"setting 'db': unsupported URL {settings.db!r}")
