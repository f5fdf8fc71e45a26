"""`threadsvc migrate [--check]`: bring a store to this version's schema, as `serve` does when
it starts, or (`--check`) say what that would run, changing nothing.

Neither creates a store: one that is not there is an error. A store whose schema is newer than
this threadsvc knows is refused (exit 1), whatever the command."""

from __future__ import annotations

import anyio
import click

from threadsvc.cli import exits
from threadsvc.cli.admin import not_a_store, refuse_foreign, settings_from, store_options
from threadsvc.errors import ThreadsvcError
from threadsvc.settings import Settings, SettingsError
from threadsvc.store import make_store
from threadsvc.store.migrate import NotAStore, check_version, pending, stored_version


def dialect(settings: Settings) -> str:
    return "sqlite" if settings.sqlite_path is not None else "postgres"


async def _apply(settings: Settings) -> tuple[int, list[tuple[int, str]]]:
    """The version found and the migrations applied."""
    found = await stored_version(settings)
    store = make_store(settings)
    await store.open(create=False)  # migrates, as serve does: once however many run together
    await store.close()
    return found, pending(dialect(settings), found)


@click.command()
@store_options
@click.option("--check", is_flag=True,
              help="Print what would run, change nothing; exit 6 when something would")
def migrate(config: str | None, db: str | None, check: bool) -> None:
    """Apply the store's pending migrations (what serve does at start-up). With --check, print
    each pending one (`VERSION FILE`) on stdout and exit 6 if there is any, 0 if none."""
    settings = settings_from(config, db=db)
    refuse_foreign(settings)
    try:
        if check:
            found = anyio.run(stored_version, settings)
            check_version(found, dialect(settings))
            applied = pending(dialect(settings), found)
        else:
            found, applied = anyio.run(_apply, settings)
    except NotAStore as exc:
        raise not_a_store(settings, exc) from None
    except (ThreadsvcError, SettingsError) as exc:
        raise click.ClickException(str(exc)) from None
    for version, name in applied:
        click.echo(f"{version:04d} {name}")
    latest = applied[-1][0] if applied else found
    if not applied:
        click.echo(f"the store is at schema version {found}: nothing to migrate", err=True)
    elif check:
        click.echo(f"the store is at schema version {found}; {len(applied)} migration(s) "
                   f"would bring it to {latest}", err=True)
        raise click.exceptions.Exit(exits.PENDING)
    else:
        click.echo(f"migrated the store from schema version {found} to {latest}", err=True)
