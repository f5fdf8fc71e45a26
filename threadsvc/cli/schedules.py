"""`threadsvc schedules list`: the `[schedules.NAME]` tables of the settings file, each with its
next tick and the last tick the store has (the thread it started, or why it was refused)."""

from __future__ import annotations

import click

from threadsvc.cli import output
from threadsvc.cli.admin import on_store, settings_from, store_options
from threadsvc.models import now_ms
from threadsvc.runner.schedules import parse_schedules
from threadsvc.settings import SettingsError


@click.group()
def schedules() -> None:
    """The schedules of the settings file and their ticks."""


@schedules.command("list")
@store_options
@click.option("--json", "as_json", is_flag=True, help="JSON rather than a table")
def schedules_list(config: str | None, db: str | None, as_json: bool) -> None:
    """Every schedule: name, job, where, owner, cron, time zone, next tick, and the last tick
    with the thread it started."""
    settings = settings_from(config, db=db)
    try:
        found = parse_schedules(settings.schedules)
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None
    last = on_store(config, db, lambda a: a.store.last_ticks()) if found else {}
    output.schedules(list(found.values()), last, now_ms(), as_json)
