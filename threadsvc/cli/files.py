"""`threadsvc files migrate --to postgres|s3`: move every upload and result to another storage.

Progress goes to standard error, a line per key (`n/total`, the bytes copied so far). Stopped
anywhere (a kill, a lost connection), it is resumed by running it again: what is there already
is skipped. Run it with the nodes stopped, then start them with the new `files` setting.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import anyio
import click

from threadsvc.cli.admin import not_a_store, refuse_foreign, settings_from, store_options
from threadsvc.errors import ThreadsvcError
from threadsvc.files import make_files
from threadsvc.files.base import FileStorage
from threadsvc.files.migrate import Step, migrate
from threadsvc.settings import Settings, SettingsError
from threadsvc.store import make_store
from threadsvc.store.migrate import NotAStore
from threadsvc.xml.render import text_line as shown

KINDS = ("local", "postgres", "s3")


def storage(kind: str, settings: Settings) -> FileStorage:
    """The storage `kind` as the nodes would build it from `settings`."""
    return make_files(settings.replace(files=kind))


@click.group()
def files() -> None:
    """Where uploads and results are kept."""


@files.command("migrate")
@store_options
@click.option("--to", "to", type=click.Choice(KINDS), required=True,
              help="The storage to move every file to")
def files_migrate(config: str | None, db: str | None, to: str) -> None:
    """Copy every upload and result from the current storage (the `files` setting) to
    another, then record it as the store's: nodes then start only with files = TO. Resumable:
    run it again after an interruption."""
    settings = settings_from(config, db=db)
    refuse_foreign(settings, files=True)
    kind = settings.files_kind
    if kind == to:
        raise click.UsageError(f"the files are in '{to}' already (setting 'files')")
    try:
        source, target = storage(kind, settings), storage(to, settings)
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None

    def report(step: Step) -> None:
        done = "copied" if step.copied else "present"
        click.echo(f"{step.n}/{step.total} {done} {shown(step.key)} ({step.size} bytes);"
                   f" {step.copied_bytes} bytes copied", err=True)

    async def run() -> list[str]:
        store = make_store(settings)
        await store.open(create=False)
        try:
            await source.open()
            await target.open()
            with tempfile.TemporaryDirectory(prefix="threadsvc-migrate-") as scratch:
                return await migrate(store, source, target, Path(scratch), report)
        finally:
            await target.close()
            await source.close()
            await store.close()

    try:
        ignored = anyio.run(run)
    except NotAStore as exc:
        raise not_a_store(settings, exc) from None
    except (ThreadsvcError, SettingsError) as exc:
        raise click.ClickException(str(exc)) from None
    for name in ignored:
        click.echo(f"left {shown(name)}: not a file the server made", err=True)
    click.echo(f"every file is in '{to}': start the nodes with files = {to}", err=True)
