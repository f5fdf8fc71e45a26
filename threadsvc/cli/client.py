"""`threadsvc threads ...`: a client of a running server (threadsvc.client), nothing more.

Errors from the server or the connection print their message and exit with status 1 (as click's
own errors; 2 is a usage error); a watched thread's end is the exit status: 0 completed,
3 failed, 4 cancelled, 5 still running when `--timeout` passed (cli/exits.py)."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from threadsvc.cli import exits, output
from threadsvc.client import Client, ClientError, ThreadsvcClientError, WaitTimeout
from threadsvc.xml.answers import ThreadInfo
from threadsvc.xml.render import text_line as shown

T = TypeVar("T")

EXIT_CODES = {"completed": exits.OK, "failed": exits.FAILED, "cancelled": exits.CANCELLED}


Connect = Callable[[], Client]


def client_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The server and the credentials (flags or the environment), given to the command as
    `connect`, which makes the client when the command is ready to call."""

    @functools.wraps(fn)
    def command(url: str, user: str | None, password: str | None, token: str | None,
                group: str | None, **given: Any) -> Any:
        return fn(lambda: make_client(url, user, password, token, group), **given)

    options = (
        click.option("--url", envvar="THREADSVC_URL", default="http://127.0.0.1:8080",
                     show_default=True, help="The server [env THREADSVC_URL]"),
        click.option("--user", envvar="THREADSVC_USER", help="Username [env THREADSVC_USER]"),
        click.option("--password", envvar="THREADSVC_PASSWORD",
                     help="Password [env THREADSVC_PASSWORD]"),
        click.option("--token", envvar="THREADSVC_TOKEN", help="An API or access token "
                     "[env THREADSVC_TOKEN]"),
        click.option("--group", "-g", help="The group's name; none for server-level threads"),
    )
    decorated: Callable[..., Any] = command
    for option in reversed(options):
        decorated = option(decorated)
    return decorated


def thread_command(name: str) -> Callable[[Callable[..., Any]], click.Command]:
    """A `threads NAME` command about one thread, named by the argument ID."""

    def decorate(fn: Callable[..., Any]) -> click.Command:
        return threads.command(name)(client_options(click.argument("thread_id", metavar="ID")(fn)))

    return decorate


def make_client(url: str, user: str | None, password: str | None, token: str | None,
                group: str | None) -> Client:
    if user and token:  # a flag beats the environment; two flags (or two variables) clash
        ctx = click.get_current_context()
        from_env = click.core.ParameterSource.ENVIRONMENT
        user_env = ctx.get_parameter_source("user") == from_env
        token_env = ctx.get_parameter_source("token") == from_env
        if user_env == token_env:
            raise click.UsageError("give --user and --password, or --token, not both")
        if token_env:
            token = None
        else:
            user = password = None
    if token:
        return Client(url, token=token, group=group)
    return Client(url, username=user or None, password=password, group=group)


def calling(action: Callable[[], T]) -> T:
    """Run a client call; its errors are printed, and exit with status 1."""
    try:
        return action()
    except ClientError as exc:
        where = f"HTTP {exc.status}" + (f", error {exc.error_id}" if exc.error_id else "")
        click.echo(f"error: {exc.message} ({where})", err=True)
    except ThreadsvcClientError as exc:
        click.echo(f"error: {exc}", err=True)
    raise click.exceptions.Exit(exits.ERROR)


def watch_thread(client: Client, thread_id: str, timeout: float | None) -> int:
    line = output.ProgressLine()

    def wait() -> ThreadInfo | WaitTimeout:  # giving up is an outcome, not an error
        try:
            return client.wait(thread_id, on_progress=line, timeout=timeout)
        except WaitTimeout as exc:
            return exc

    final = calling(wait)
    if isinstance(final, WaitTimeout):
        line.end(final.thread)
        click.echo(f"gave up: {shown(str(final))}", err=True)
        return exits.TIMEOUT
    line.end(final)
    return EXIT_CODES.get(final.status, exits.ERROR)


def _pairs(values: tuple[str, ...], what: str) -> list[tuple[str, str]]:
    pairs = []
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{value!r} is not NAME=VALUE", param_hint=what)
        pairs.append((name, rest))
    return pairs


@click.group()
def threads() -> None:
    """Threads on a running server, as a client (--url, --user/--password or --token, --group).

    Errors from the server or the connection print their message and exit with status 1."""


@threads.command("start")
@client_options
@click.argument("job")
@click.argument("params", nargs=-1, metavar="[NAME=VALUE]...")
@click.option("--file", "files", multiple=True, metavar="NAME=PATH",
              help="A file to upload as the field NAME (repeatable)")
@click.option("--idempotency-key", help="Starting again with the same key starts nothing new")
@click.option("--wait", "wait_", is_flag=True, help="Then watch it, exiting as `watch` does")
@click.option("--timeout", type=float, help="With --wait: give up after this many seconds")
def threads_start(connect: Connect, job: str, params: tuple[str, ...], files: tuple[str, ...],
                  idempotency_key: str | None, wait_: bool, timeout: float | None) -> None:
    """Start JOB with its parameters; prints the thread id alone on stdout.

    With --wait, then shows its progress on stderr and exits 0 when it completed, 3 when it
    failed, 4 when it was cancelled, 5 when --timeout passed first (1 on errors)."""
    fields = dict(_pairs(params, "NAME=VALUE"))
    uploads: dict[str, list[str]] = {}
    for name, path in _pairs(files, "--file"):
        if not Path(path).is_file():
            raise click.BadParameter(f"{path!r} is not a file", param_hint="--file")
        uploads.setdefault(name, []).append(path)
    client = connect()
    thread = calling(lambda: client.start(job, fields, uploads or None, idempotency_key))
    click.echo(thread.id)
    if wait_:
        sys.stdout.flush()
        raise click.exceptions.Exit(watch_thread(client, thread.id, timeout))


@thread_command("watch")
@click.option("--timeout", type=float, help="Give up (exit 5) after this many seconds")
def threads_watch(connect: Connect, thread_id: str, timeout: float | None) -> None:
    """Show a thread's progress live on stderr until it ends.

    Exit status: 0 completed, 3 failed, 4 cancelled, 5 still running after --timeout, 1 on
    errors."""
    client = connect()
    raise click.exceptions.Exit(watch_thread(client, thread_id, timeout))


@thread_command("show")
def threads_show(connect: Connect, thread_id: str) -> None:
    """Print a thread, one `name: value` line per attribute."""
    client = connect()
    output.thread(calling(lambda: client.get(thread_id)))


@threads.command("list")
@client_options
@click.option("--status", help="Comma list of statuses, or active (default), finished, all")
@click.option("--username", help="Only threads started by this user")
@click.option("--type", "job", help="Only threads of this job")
@click.option("--page", type=click.IntRange(min=1), help="Page, from 1")
@click.option("--pagesize", type=click.IntRange(1, 1000), help="Threads a page (default 100)")
def threads_list(connect: Connect, status: str | None, username: str | None, job: str | None,
                 page: int | None, pagesize: int | None) -> None:
    """List threads, newest first: id, status, job, user, progress, created, name."""
    client = connect()
    output.threads(calling(lambda: client.list_threads(
        status, username=username, type=job, page=page, pagesize=pagesize)))


@thread_command("logs")
@click.option("--level", type=click.Choice(["DEBUG", "INFO", "WARN", "ERROR"],
                                           case_sensitive=False), help="Minimum level")
@click.option("--text", help="Only events holding this text (A-Z in either case), searched by "
                             "the server")
def threads_logs(connect: Connect, thread_id: str, level: str | None, text: str | None) -> None:
    """Print a thread's log, one `DATETIME LEVEL text` line per event, oldest first."""
    client = connect()

    def show() -> None:
        for entry in client.logs(thread_id, level.upper() if level else None, text=text):
            click.echo(entry.line())

    calling(show)


@thread_command("cancel")
def threads_cancel(connect: Connect, thread_id: str) -> None:
    """Cancel a thread; prints `ID STATUS` as it stands after the request."""
    client = connect()
    thread = calling(lambda: client.cancel(thread_id))
    if thread is None:
        where = f" in group {client.group}" if client.group else ""
        click.echo(f"error: no thread {thread_id}{where}", err=True)
        raise click.exceptions.Exit(exits.ERROR)
    click.echo(f"{thread.id} {thread.status}")
