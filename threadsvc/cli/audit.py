"""`threadsvc audit`: the audit log of the store, as a table for people or JSON for scripts.

Threat model: every stored text (a name tried at sign-in, a username, a detail) may be
anyone's; the table prints each through `output.shown` (one line, no control character), and
JSON escapes them itself.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import click

from threadsvc.cli.admin import on_store, store_options
from threadsvc.models import AUDIT_ACTIONS, AuditEntry, AuditFilter, iso
from threadsvc.xml.render import text_line as shown  # as cli/output.py prints

COLUMNS = (("TIME", 24), ("ACTION", 14), ("ACTOR", 16), ("TARGET", 34), ("GROUP", 12),
           ("ADDRESS", 15))


def _moment(raw: str | None) -> int | None:
    """ISO 8601 (UTC when no offset is given) as epoch milliseconds."""
    if raw is None:
        return None
    try:
        moment = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise click.BadParameter("must be an ISO 8601 date or date-time",
                                 param_hint="--since") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


@click.command()
@store_options
@click.option("--since", help="Entries from this moment on (ISO 8601; UTC unless it says), "
              "oldest first; without it, the latest entries")
@click.option("--action", type=click.Choice(sorted(AUDIT_ACTIONS)), help="Only this action")
@click.option("--user", help="Only entries by this user, or about them")
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True,
              help="Entries at most")
@click.option("--json", "as_json", is_flag=True, help="JSON rather than a table")
def audit(config: str | None, db: str | None, since: str | None, action: str | None,
          user: str | None, limit: int, as_json: bool) -> None:
    """The audit log: failed sign-ins and lockouts, changes to users, tokens, clients, groups
    and memberships, cancels and deletes of threads, webhooks added and removed."""
    query = AuditFilter(limit=limit, action=action, user=user, from_ts=_moment(since),
                        latest=since is None)
    page = on_store(config, db, lambda a: a.store.audit_entries(query))
    if as_json:
        click.echo(json.dumps([_data(entry) for entry in page.entries]))
    else:
        _table(page.entries)
    if page.more:
        click.echo(f"(the first {limit}; more follow: see --since and --limit)", err=True)


def _data(entry: AuditEntry) -> dict[str, object]:
    return {"seq": entry.id, "timestamp": entry.timestamp, "datetime": iso(entry.timestamp),
            "action": entry.action, "actor": entry.actor, "target": entry.target,
            "group": entry.group, "address": entry.address, "detail": entry.detail}


def _table(entries: list[AuditEntry]) -> None:
    if not entries:  # nothing, as the other lists print for none
        return
    click.echo(" ".join(name.ljust(width) for name, width in COLUMNS) + " DETAIL")
    for e in entries:
        cells = (iso(e.timestamp), e.action, e.actor or "-", e.target, e.group or "-",
                 e.address or "-")
        line = " ".join(shown(cell).ljust(width) for cell, (_, width) in zip(cells, COLUMNS,
                                                                              strict=True))
        click.echo(f"{line} {shown(e.detail)}".rstrip())
