"""`threadsvc job pause|resume|paused` and `threadsvc node list|max-running|drain|undrain`: the
administrators' controls of a running server (threadsvc/controls.py), made on its store as the
operator (`cli:USER` in the audit log). Every node sharing the store obeys within seconds.

Threat model: as admin.py's commands; names and numbers are checked by threadsvc/controls.py
before they reach the store, and node names are printed through `output.shown`."""

from __future__ import annotations

import json
import sys

import click

from threadsvc import controls
from threadsvc.cli import exits
from threadsvc.cli.admin import change, on_store, settings_from, store_options
from threadsvc.models import iso
from threadsvc.xml.render import text_line as shown


@click.group("job")
def job() -> None:
    """Pause and resume jobs on every node."""


@job.command("pause")
@store_options
@click.argument("name")
def pause(config: str | None, db: str | None, name: str) -> None:
    """Pause job NAME: its new threads wait `initialised` on every node; running ones go on."""
    change(config, db, lambda a: controls.pause_job(a.store, name, a.by),
           f"job {shown(name)} is paused")


@job.command("resume")
@store_options
@click.argument("name")
def resume(config: str | None, db: str | None, name: str) -> None:
    """Resume job NAME: its waiting threads are claimed again."""
    change(config, db, lambda a: controls.resume_job(a.store, name, a.by),
           f"job {shown(name)} is not paused")


@job.command("paused")
@store_options
def paused(config: str | None, db: str | None) -> None:
    """The paused jobs: name, since when, by whom."""
    for found in on_store(config, db, lambda a: controls.paused_jobs(a.store)):
        click.echo(f"{shown(found.job)}\t{iso(found.paused)}\t{shown(found.actor or '-')}")


@click.group("node")
def node() -> None:
    """See the nodes; change a node's max-running; drain a node before an upgrade."""


@node.command("list")
@store_options
@click.option("--json", "as_json", is_flag=True, help="JSON rather than a table")
def list_nodes(config: str | None, db: str | None, as_json: bool) -> None:
    """The nodes that ran in the last day: what they run and may run, their last beat."""
    lease = settings_from(config, db=db).lease_timeout
    found = on_store(config, db, lambda a: controls.nodes(a.store, lease))
    if as_json:
        click.echo(json.dumps([_data(n) for n in found]))
        return
    if found:
        click.echo(f"{'NODE':32} {'RUNNING':>7} {'MAX':>5} {'BEAT AGE':>9} STATE")
    for n in found:
        click.echo(f"{shown(n.name):32} {n.row.running:>7} {n.row.capacity:>5} "
                   f"{n.age:>8.1f}s {_state(n)}")


@node.command("max-running")
@store_options
@click.argument("name")
@click.argument("value")
def max_running(config: str | None, db: str | None, name: str, value: str) -> None:
    """Make node NAME claim up to VALUE threads (1 to 10000; `default`: its own setting again).
    Threads it runs over a lower value go on; it picks the value up within seconds."""
    change(config, db, lambda a: controls.set_max_running(a.store, name, value, a.by),
           f"node {shown(name)}: max-running {shown(value)}")


@node.command("drain")
@store_options
@click.argument("name")
@click.option("--wait", is_flag=True, help="Wait until the node is empty (exit 5 on --timeout)")
@click.option("--timeout", type=click.FloatRange(0, 86_400), default=3600.0, show_default=True,
              help="Seconds --wait waits at most")
def drain(config: str | None, db: str | None, name: str, wait: bool, timeout: float) -> None:
    """Make node NAME claim nothing more, letting its running threads finish (before an
    upgrade). A restart of the node, or `node undrain`, makes it claim again."""
    change(config, db, lambda a: controls.drain(a.store, name, a.by),
           f"node {shown(name)} is draining")
    if not wait:
        return
    lease = settings_from(config, db=db).lease_timeout
    found = on_store(config, db, lambda a: controls.wait_until_empty(a.store, name, lease, timeout))
    if found.row.empty:
        click.echo(f"node {shown(name)} is empty", err=True)
    elif found.stale:
        raise click.ClickException(f"node {shown(name)} stopped beating {found.age:.0f} s ago "
                                   f"with {found.row.running} threads running")
    else:
        click.echo(f"node {shown(name)} still runs {found.row.running} threads", err=True)
        sys.exit(exits.TIMEOUT)


@node.command("undrain")
@store_options
@click.argument("name")
def undrain(config: str | None, db: str | None, name: str) -> None:
    """Make node NAME claim again after a drain."""
    change(config, db, lambda a: controls.drain(a.store, name, a.by, draining=False),
           f"node {shown(name)} claims again")


def _state(n: controls.NodeView) -> str:
    if n.stale:
        return "stale"
    if n.row.empty:
        return "drained, empty"
    if n.row.draining:
        return "draining"
    return "claiming"


def _data(n: controls.NodeView) -> dict[str, object]:
    r = n.row
    return {"node": r.node, "started": iso(r.started), "heartbeat": iso(r.seen),
            "age": round(n.age, 1), "running": r.running, "max_running": r.capacity,
            "max_running_set": r.max_running, "draining": r.draining, "empty": r.empty,
            "stale": n.stale}
