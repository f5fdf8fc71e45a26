"""`threadsvc key fingerprint`: a short hash of each secret key, to compare the keys of nodes
(which must sign with the same one) without showing them.

Threat model: the output goes to terminals, tickets and chat. It is a keyed hash of a fixed
label (keys.key_fingerprint), cut to 16 hex digits: it tells nothing of the key, and no key is
ever printed.
"""

from __future__ import annotations

import click

from threadsvc.cli.admin import on_store, settings_from, store_options
from threadsvc.keys import secret_keys, short_fingerprint


@click.group()
def key() -> None:
    """The secret keys that sign tokens, links and sessions."""


@key.command("fingerprint")
@store_options
def fingerprint(config: str | None, db: str | None) -> None:
    """Each secret key's fingerprint: the configured ones (the first signs, the others verify),
    or the one generated and kept in the store when none is configured. The server logs the
    signing key's at start."""
    settings = settings_from(config, db=db)
    if settings.secret_key:
        for n, each in enumerate(settings.secret_key):
            click.echo(f"{short_fingerprint(each)}  {'signs' if n == 0 else 'verifies'}")
        return
    keys = on_store(config, db, lambda admin: secret_keys(settings, admin.store))
    click.echo(f"{short_fingerprint(keys[0])}  signs (generated, kept in the store)")
