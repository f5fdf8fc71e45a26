"""What the commands print: tables and lines for people, `--json` for scripts, the live
progress line of `threads watch` (redrawn with `\r` at a terminal, a plain line per change
elsewhere, so that a log or a CI job shows no carriage returns).

Threat model: what a server sends (a job's message, a thread's name, a username made before
names were checked) reaches an operator's terminal. Every such text is printed through
`shown`: line breaks become spaces and other control characters U+FFFD, so no escape sequence
(C0's ESC or C1's CSI) can move the cursor, rewrite the screen or forge a line."""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import TYPE_CHECKING

import click

from threadsvc.models import Group, Role, UserEntry
from threadsvc.runner.schedules import Schedule
from threadsvc.store.schedules import Tick
from threadsvc.xml.answers import ThreadInfo, ThreadList
from threadsvc.xml.render import text_line as shown

if TYPE_CHECKING:
    from threadsvc.admin import UserDetails


def users(entries: list[UserEntry], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps([{"username": e.user.username, "admin": e.user.is_admin,
                                "disabled": e.disabled, "created": e.created} for e in entries]))
        return
    for e in entries:
        flags = ", ".join(f for f, on in (("administrator", e.user.is_admin),
                                          ("disabled", e.disabled)) if on)
        click.echo(f"{shown(e.user.username):24} {flags}".rstrip())


def user(details: UserDetails, as_json: bool) -> None:
    entry = details.entry
    roles = {group.name: role.label for group, role in details.groups}
    if as_json:
        click.echo(json.dumps({"username": entry.user.username, "admin": entry.user.is_admin,
                               "disabled": entry.disabled, "created": entry.created,
                               "groups": roles, "api_tokens": details.api_tokens,
                               "clients": details.clients}))
        return
    click.echo(f"username: {shown(entry.user.username)}")
    click.echo(f"administrator: {'yes' if entry.user.is_admin else 'no'}")
    click.echo(f"disabled: {'yes' if entry.disabled else 'no'}")
    for name, label in roles.items():
        click.echo(f"group: {shown(name)} ({label})")
    click.echo(f"api tokens: {details.api_tokens}")
    for client_id in details.clients:
        click.echo(f"client: {shown(client_id)}")


def groups(found: list[tuple[Group, int]], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps([{"name": g.name, "id": g.id, "members": n} for g, n in found]))
        return
    if found:
        click.echo(f"{'NAME':24} {'ID':>8} {'MEMBERS':>8}")
    for g, n in found:
        click.echo(f"{shown(g.name):24} {g.id:>8} {n:>8}")


def members(found: list[tuple[UserEntry, Role]], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps([{"username": e.user.username, "role": r.label,
                                "admin": e.user.is_admin, "disabled": e.disabled}
                               for e, r in found]))
        return
    if found:
        click.echo(f"{'USERNAME':24} {'ROLE':12}")
    for e, r in found:
        flags = ", ".join(f for f, on in (("administrator", e.user.is_admin),
                                          ("disabled", e.disabled)) if on)
        click.echo(f"{shown(e.user.username):24} {r.label:12} {flags}".rstrip())


def clients(found: list[tuple[str, str, int]], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps([{"client_id": c, "username": u, "created": t} for c, u, t in found]))
        return
    for client_id, username, _ in found:
        click.echo(f"{shown(client_id)}  {shown(username)}")


def schedules(found: list[Schedule], last: dict[str, Tick], now: int, as_json: bool) -> None:
    """One schedule a line: name, job, where, owner, cron, time zone, next tick, last tick and
    its thread (or why its start was refused); ticks in the schedule's time zone."""
    rows = []
    for s in found:
        tick = last.get(s.name)
        rows.append({
            "name": s.name, "job": s.job, "where": s.where, "owner": s.owner, "cron": s.cron,
            "timezone": s.timezone, "next": s.shown(s.next_after(now)),
            "last": s.shown(tick.tick) if tick else None,
            "thread": tick.thread_id if tick else None,
            "refused": tick.outcome if tick else None,
        })
    if as_json:
        click.echo(json.dumps(rows))
        return
    if not rows:  # no schedules: nothing, as the other lists print for none
        return
    columns = ("name", "job", "where", "owner", "cron", "timezone", "next", "last")
    widths = (20, 10, 12, 12, 18, 16, 25, 25)
    click.echo(" ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))
               + " THREAD")
    for row in rows:
        cells = [shown(str(row[c] or "-")).ljust(w) for c, w in zip(columns, widths, strict=True)]
        outcome = row["thread"] or (f"refused: {row['refused']}" if row["refused"] else "-")
        click.echo(" ".join(cells) + " " + shown(str(outcome)))


def thread(found: ThreadInfo) -> None:
    """One `name: value` line per attribute that has a value."""
    for item in dataclasses.fields(found):
        value = getattr(found, item.name)
        if value is not None:
            click.echo(f"{item.name}: {shown(str(value))}")


def threads(found: ThreadList) -> None:
    """id, status, job, user, progress, created, name; a note on stderr when there are more."""
    for t in found.threads:
        done = f"{t.percent}%" if t.percent is not None else "-"
        click.echo(f"{shown(t.id)}  {shown(t.status):<11} {shown(t.type or '-'):<10} "
                   f"{shown(t.username):<12} {done:>4}  {shown(t.created or '-')}  {shown(t.name)}")
    listed = len(found.threads)
    if found.total > listed:
        click.echo(f"({listed} of {found.total} on page {found.page}; see --page)", err=True)


class ProgressLine:
    """The progress on standard error: at a terminal, one live line redrawn with `\\r` (status,
    bar, percent, message); elsewhere (a pipe, a file, a CI log), a plain line each time the
    status, the message or the tens of percent change (the final state only when it is the
    first seen)."""

    WIDTH = 30

    def __init__(self, live: bool | None = None) -> None:
        self.live = sys.stderr.isatty() if live is None else live
        self.shown = False
        self._last: tuple[object, ...] | None = None

    def __call__(self, thread: ThreadInfo) -> None:
        if not self.live:
            self._plain(thread)
            return
        if thread.total:
            filled = self.WIDTH * min(thread.current or 0, thread.total) // thread.total
            bar = f"[{'#' * filled}{'-' * (self.WIDTH - filled)}] {thread.percent or 0:3d}% "
            bar += f"{thread.current or 0}/{thread.total}"
        else:
            bar = f"[{'?' * self.WIDTH}]" if thread.current is None else f"{thread.current} done"
        line = f"{shown(thread.status):<11} {bar}  {shown(thread.message or '')[:60]}"
        click.echo("\r" + line.ljust(100), nl=False, err=True)
        self.shown = True

    def _plain(self, thread: ThreadInfo) -> None:
        key = (thread.status, thread.message, (thread.percent or 0) // 10)
        if key == self._last or (thread.final and self._last is not None):
            return  # unchanged, or the end of a watched progress: end() says it
        self._last = key
        if thread.total:
            done = f" {thread.current or 0}/{thread.total} ({thread.percent or 0}%)"
        else:
            done = "" if thread.current is None else f" {thread.current} done"
        message = f": {shown(thread.message)}" if thread.message else ""
        click.echo(f"{shown(thread.status)}{done}{message}", err=True)

    def end(self, thread: ThreadInfo) -> None:
        if self.shown:  # end the live line
            click.echo("", err=True)
        click.echo(f"thread {shown(thread.id)} {shown(thread.status)}"
                   + (f": {shown(thread.message)}" if thread.message else ""), err=True)
