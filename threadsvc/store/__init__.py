"""Stores: where threads, logs and identities live. `make_store` picks one from the URL."""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote, urlsplit

from threadsvc.settings import Settings, SettingsError
from threadsvc.store.base import Store

# A password in a URL's user info, or a libpq `password=` pair (quoted or not).
_URL_PASSWORD = re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^:/?#@\s\"']*:)[^@\s\"']*@")
_KEY_PASSWORD = re.compile(r"(?i)(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s\"]+)")
HIDDEN = "***"


def redact(text: str, url: str | None = None) -> str:
    """`text` without the password of any store URL in it, nor `url`'s password where it is
    quoted alone (drivers quote the whole connection string in some errors)."""
    text = _KEY_PASSWORD.sub(rf"\1{HIDDEN}", _URL_PASSWORD.sub(rf"\1{HIDDEN}@", text))
    for secret in _passwords(url):
        text = text.replace(secret, HIDDEN)
    return text


def _passwords(url: str | None) -> list[str]:
    """`url`'s password as written and as meant (percent-decoded); short ones are left to the
    patterns above, as hiding every occurrence of a few characters would garble messages."""
    if not url:
        return []
    found = _KEY_PASSWORD.search(url)
    password = found.group(2).strip("'") if found else None
    if password is None:
        try:
            password = urlsplit(url).password
        except ValueError:
            password = None
    if not password:
        return []
    return [p for p in {password, unquote(password)} if len(p) >= 4]


class RedactStoreUrl(logging.Filter):
    """Redacts `url`'s password from the records of a driver's logger."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message, self.url)
        if clean != message:
            record.msg, record.args = clean, None
        return True


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
    raise SettingsError(f"setting 'db': unsupported URL {redact(settings.db, settings.db)!r}")
