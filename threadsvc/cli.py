"""The `threadsvc` command: it only turns arguments into settings and calls."""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import re
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import click

from threadsvc import admin
from threadsvc.client import Client, ClientError, ThreadInfo, ThreadsvcClientError
from threadsvc.errors import BadParameter, ThreadsvcError
from threadsvc.identity import check_username
from threadsvc.jobs.command import parse_commands
from threadsvc.settings import Settings, SettingsError, load_settings

T = TypeVar("T")


def store_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--db", help="Store URL: sqlite:///FILE or postgresql://...")(fn)
    fn = click.option("--config", type=click.Path(dir_okay=False), help="TOML settings file")(fn)
    return fn


def settings_from(config: str | None, **flags: Any) -> Settings:
    try:
        return load_settings(config, **flags)
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None


def run(settings: Settings, action: Callable[[admin.Admin], Awaitable[T]]) -> T:
    async def main() -> T:
        async with admin.opened(settings) as opened:
            return await action(opened)

    try:
        return anyio.run(main)
    except (ThreadsvcError, SettingsError) as exc:
        raise click.ClickException(str(exc)) from None


@click.group()
@click.version_option(package_name="threadsvc")
def main() -> None:
    """threadsvc: long-running, group-scoped jobs behind PageSeeder-compatible services."""


@main.command()
@store_options
@click.option("--host", help="Address to listen on (default 127.0.0.1)")
@click.option("--port", type=int, help="Port to listen on (default 8080)")
@click.option("--demo", is_flag=True, help="Create demo accounts and a group, print them, serve")
def serve(config: str | None, db: str | None, host: str | None, port: int | None, demo: bool) -> None:
    """Run the server."""
    import uvicorn

    from threadsvc.app import create_app, stop_waiting
    from threadsvc.logrepeat import RepeatLimit
    from threadsvc.web import serving
    from threadsvc.web.serving import connection_limits, http_protocol

    settings = settings_from(config, db=db, host=host, port=port)
    try:
        parse_commands(settings.commands)  # a bad [commands] table is a usage error, not a crash
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactResultLinks())
        handler.addFilter(RepeatLimit())  # e.g. asyncio's, should accept() ever fail again
    if demo:
        accounts = run(settings, admin.ensure_demo)
        print_demo(settings, accounts)
    app = create_app(settings)
    uvicorn_config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        proxy_headers=True,
        timeout_graceful_shutdown=int(settings.shutdown_grace) + 5,
        log_level="info",
        log_config=_uvicorn_log_config(),
        http=http_protocol(
            settings.read_timeout,
            connection_limits(settings.max_connections, settings.max_running),
        ),
    )
    serving.serve(uvicorn_config, on_exit=lambda: stop_waiting(app))


_RESULT_TOKEN = re.compile(r"(/results/)[^/?#\s\"]+")


class RedactResultLinks(logging.Filter):
    """A pre-signed result link works without credentials until it expires, so no log line
    keeps one: `/results/TOKEN` is logged as `/results/[redacted]` (uvicorn's access log, and
    threadsvc's own lines that name a request's path)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        if not any(isinstance(part, str) and "/results/" in part for part in (record.msg, *args)):
            return True  # the access log of every other request: nothing to look for
        if isinstance(record.msg, str):
            record.msg = _RESULT_TOKEN.sub(r"\1[redacted]", record.msg)
        if isinstance(record.args, tuple):  # uvicorn's access formatter unpacks the args
            record.args = tuple(_RESULT_TOKEN.sub(r"\1[redacted]", arg) if isinstance(arg, str)
                                else arg for arg in record.args)
        return True


def _uvicorn_log_config() -> dict[str, Any]:
    """uvicorn's own logging configuration, with RedactResultLinks and RepeatLimit on its
    handlers."""
    from uvicorn.config import LOGGING_CONFIG

    from threadsvc.logrepeat import RepeatLimit

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["redact-result-links"] = {"()": RedactResultLinks}
    config["filters"]["repeat-limit"] = {"()": RepeatLimit}
    for handler in config["handlers"].values():
        handler.setdefault("filters", []).extend(["redact-result-links", "repeat-limit"])
    return config


def print_demo(settings: Settings, accounts: list[tuple[str, str, str]]) -> None:
    base = f"http://{settings.host}:{settings.port}/ps/service"
    click.echo("Demo accounts (passwords are new each time --demo runs):")
    for username, password, what in accounts:
        click.echo(f"  {username:18} {password:20} {what}")
    user, password = next((u, p) for u, p, _ in accounts if u == "demo-contributor")
    auth = f"-u {user}:{password}"
    click.echo("\nTry:")
    click.echo(f"  curl -i {auth} -d job=sleep -d seconds=20 {base}/groups/demo/threads")
    click.echo(f"  curl {auth} {base}/threads/THREAD_ID/progress")
    click.echo(f"  curl {auth} {base}/groups/demo/threads/THREAD_ID/logs")
    click.echo("")
    sys.stdout.flush()  # before uvicorn takes over, even when stdout is a pipe


@main.group()
def user() -> None:
    """Users and their API tokens."""


@user.command("add")
@store_options
@click.argument("username")
@click.option("--admin", "is_admin", is_flag=True, help="Make the user a server administrator")
@click.option("--password", help="The password (visible to other local users; prefer stdin)")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input")
def user_add(config: str | None, db: str | None, username: str, is_admin: bool,
             password: str | None, password_stdin: bool) -> None:
    """Add a user (without a password, the user signs in with tokens only)."""
    if password is not None and password_stdin:
        raise click.UsageError("give --password or --password-stdin, not both")
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    try:
        check_username(username)
    except BadParameter as exc:
        raise click.UsageError(str(exc)) from None
    settings = settings_from(config, db=db)
    run(settings, lambda a: a.identity.add_user(username, password or None, is_admin))
    click.echo(f"added user {username}" + (" (administrator)" if is_admin else ""), err=True)


@user.command("token")
@store_options
@click.argument("username")
def user_token(config: str | None, db: str | None, username: str) -> None:
    """Print a new API token for USERNAME, alone on stdout."""
    settings = settings_from(config, db=db)
    click.echo(run(settings, lambda a: a.identity.new_api_token(username)))


@user.command("revoke-token")
@store_options
def user_revoke_token(config: str | None, db: str | None) -> None:
    """Revoke the API token read from standard input (kept off the command line, where other
    local users could see it). A running server refuses it within `auth-cache-seconds`."""
    token = sys.stdin.readline().strip()
    if not token:
        raise click.UsageError("give the token on standard input")
    settings = settings_from(config, db=db)
    run(settings, lambda a: admin.revoke_token(a, token))
    click.echo("revoked the token", err=True)


@user.command("passwd")
@store_options
@click.argument("username")
def user_passwd(config: str | None, db: str | None, username: str) -> None:
    """Give USERNAME the password read from standard input; their console sessions end."""
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise click.UsageError("give the new password on standard input")
    settings = settings_from(config, db=db)
    run(settings, lambda a: admin.set_password(a, username, password))
    click.echo(f"changed the password of {username}", err=True)


@user.command("disable")
@store_options
@click.argument("username")
def user_disable(config: str | None, db: str | None, username: str) -> None:
    """Refuse every credential of USERNAME (their threads stay); deletes their API tokens and
    OAuth clients, and ends their sessions and access tokens."""
    settings = settings_from(config, db=db)
    run(settings, lambda a: admin.disable_user(a, username))
    click.echo(f"disabled {username}", err=True)


@user.command("enable")
@store_options
@click.argument("username")
def user_enable(config: str | None, db: str | None, username: str) -> None:
    """Let a disabled USERNAME sign in again (their old tokens and clients stay deleted)."""
    settings = settings_from(config, db=db)
    run(settings, lambda a: admin.enable_user(a, username))
    click.echo(f"enabled {username}", err=True)


@user.command("remove")
@store_options
@click.argument("username")
def user_remove(config: str | None, db: str | None, username: str) -> None:
    """Remove USERNAME with their memberships, tokens and clients (their threads stay)."""
    settings = settings_from(config, db=db)
    run(settings, lambda a: admin.remove_user(a, username))
    click.echo(f"removed {username}", err=True)


@user.command("unlock")
@store_options
@click.argument("username")
def user_unlock(config: str | None, db: str | None, username: str) -> None:
    """Lift a lockout of USERNAME after failed sign-ins (from every address)."""
    settings = settings_from(config, db=db)
    lifted = run(settings, lambda a: admin.unlock_user(a, username))
    click.echo(f"unlocked {username}" if lifted else f"{username} had no failed sign-ins",
               err=True)


@user.command("list")
@store_options
@click.option("--json", "as_json", is_flag=True, help="JSON rather than a table")
def user_list(config: str | None, db: str | None, as_json: bool) -> None:
    """Every user: name, administrator or not, disabled or not."""
    settings = settings_from(config, db=db)
    entries = run(settings, admin.list_users)
    if as_json:
        click.echo(json.dumps([{"username": e.user.username, "admin": e.user.is_admin,
                                "disabled": e.disabled, "created": e.created} for e in entries]))
        return
    for e in entries:
        flags = ", ".join(f for f, on in (("administrator", e.user.is_admin),
                                          ("disabled", e.disabled)) if on)
        click.echo(f"{e.user.username:24} {flags}".rstrip())


@user.command("show")
@store_options
@click.argument("username")
@click.option("--json", "as_json", is_flag=True, help="JSON rather than lines")
def user_show(config: str | None, db: str | None, username: str, as_json: bool) -> None:
    """USERNAME: administrator or not, disabled or not, and their role in each group."""
    settings = settings_from(config, db=db)
    entry, groups = run(settings, lambda a: admin.show_user(a, username))
    roles = {group.name: role.label for group, role in groups}
    if as_json:
        click.echo(json.dumps({"username": entry.user.username, "admin": entry.user.is_admin,
                               "disabled": entry.disabled, "created": entry.created,
                               "groups": roles}))
        return
    click.echo(f"username: {entry.user.username}")
    click.echo(f"administrator: {'yes' if entry.user.is_admin else 'no'}")
    click.echo(f"disabled: {'yes' if entry.disabled else 'no'}")
    for name, label in roles.items():
        click.echo(f"group: {name} ({label})")


@main.group()
def client() -> None:
    """OAuth 2 clients (client credentials)."""


@client.command("add")
@store_options
@click.argument("username")
def client_add(config: str | None, db: str | None, username: str) -> None:
    """Add an OAuth client acting as USERNAME; prints its id and secret."""
    settings = settings_from(config, db=db)
    client_id, secret = run(settings, lambda a: a.identity.new_client(username))
    click.echo(f"client_id: {client_id}")
    click.echo(f"client_secret: {secret}")


@client.command("remove")
@store_options
@click.argument("client_id")
def client_remove(config: str | None, db: str | None, client_id: str) -> None:
    """Remove a client; its access tokens end within `auth-cache-seconds`."""
    settings = settings_from(config, db=db)
    run(settings, lambda a: admin.remove_client(a, client_id))
    click.echo(f"removed client {client_id}", err=True)


@client.command("list")
@store_options
@click.option("--json", "as_json", is_flag=True, help="JSON rather than a table")
def client_list(config: str | None, db: str | None, as_json: bool) -> None:
    """Every client: its id and the user it acts as."""
    settings = settings_from(config, db=db)
    found = run(settings, lambda a: a.store.list_oauth_clients())
    if as_json:
        click.echo(json.dumps([{"client_id": c, "username": u, "created": t} for c, u, t in found]))
        return
    for client_id, username, _ in found:
        click.echo(f"{client_id}  {username}")


@main.group()
def group() -> None:
    """Groups."""


@group.command("add")
@store_options
@click.argument("name")
@click.option("--id", "group_id", type=click.IntRange(min=1), help="The group's id")
def group_add(config: str | None, db: str | None, name: str, group_id: int | None) -> None:
    """Add a group."""
    settings = settings_from(config, db=db)
    created = run(settings, lambda a: admin.add_group(a, name, group_id))
    click.echo(f"added group {created.name} (id {created.id})", err=True)


@main.group()
def member() -> None:
    """Group memberships."""


@member.command("add")
@store_options
@click.argument("group_name", metavar="GROUP")
@click.argument("username")
@click.argument("role", type=click.Choice(["reviewer", "contributor", "manager", "approver"]))
def member_add(config: str | None, db: str | None, group_name: str, username: str,
               role: str) -> None:
    """Give USERNAME a ROLE in GROUP (replacing any role they had there)."""
    settings = settings_from(config, db=db)
    run(settings, lambda a: admin.add_member(a, group_name, username, role))
    click.echo(f"{username} is {role} in {group_name}", err=True)


@member.command("remove")
@store_options
@click.argument("group_name", metavar="GROUP")
@click.argument("username")
def member_remove(config: str | None, db: str | None, group_name: str, username: str) -> None:
    """Take USERNAME out of GROUP (a running server honours it within `auth-cache-seconds`)."""
    settings = settings_from(config, db=db)
    run(settings, lambda a: admin.remove_member(a, group_name, username))
    click.echo(f"{username} is no longer a member of {group_name}", err=True)


# -- threads: a client of a running server (threadsvc.client) ----------------------------------
EXIT_CODES = {"completed": 0, "failed": 1, "cancelled": 2}
EXIT_ERROR = 3


def client_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--group", "-g", help="The group's name; none for server-level threads")(fn)
    fn = click.option("--token", envvar="THREADSVC_TOKEN", help="An API or access token "
                      "[env THREADSVC_TOKEN]")(fn)
    fn = click.option("--password", envvar="THREADSVC_PASSWORD",
                      help="Password [env THREADSVC_PASSWORD]")(fn)
    fn = click.option("--user", envvar="THREADSVC_USER", help="Username [env THREADSVC_USER]")(fn)
    fn = click.option("--url", envvar="THREADSVC_URL", default="http://127.0.0.1:8080",
                      show_default=True, help="The server [env THREADSVC_URL]")(fn)
    return fn


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
    """Run a client call; its errors are printed, and exit with status 3."""
    try:
        return action()
    except ClientError as exc:
        where = f"HTTP {exc.status}" + (f", error {exc.error_id}" if exc.error_id else "")
        click.echo(f"error: {exc.message} ({where})", err=True)
    except ThreadsvcClientError as exc:
        click.echo(f"error: {exc}", err=True)
    raise click.exceptions.Exit(EXIT_ERROR)


class ProgressLine:
    """A live `\\r` line on standard error: status, bar, percent, message."""

    WIDTH = 30

    def __init__(self) -> None:
        self.shown = False

    def __call__(self, thread: ThreadInfo) -> None:
        if thread.total:
            filled = self.WIDTH * min(thread.current or 0, thread.total) // thread.total
            bar = f"[{'#' * filled}{'-' * (self.WIDTH - filled)}] {thread.percent or 0:3d}% "
            bar += f"{thread.current or 0}/{thread.total}"
        else:
            bar = f"[{'?' * self.WIDTH}]" if thread.current is None else f"{thread.current} done"
        line = f"{thread.status:<11} {bar}  {(thread.message or '')[:60]}"
        click.echo("\r" + line.ljust(100), nl=False, err=True)
        self.shown = True

    def end(self, thread: ThreadInfo) -> None:
        if self.shown:
            click.echo("", err=True)
        click.echo(f"thread {thread.id} {thread.status}"
                   + (f": {thread.message}" if thread.message else ""), err=True)


def watch_thread(client: Client, thread_id: str, timeout: float | None) -> int:
    line = ProgressLine()
    final = calling(lambda: client.wait(thread_id, on_progress=line, timeout=timeout))
    line.end(final)
    return EXIT_CODES.get(final.status, EXIT_ERROR)


def _pairs(values: tuple[str, ...], what: str) -> list[tuple[str, str]]:
    pairs = []
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{value!r} is not NAME=VALUE", param_hint=what)
        pairs.append((name, rest))
    return pairs


@main.group()
def threads() -> None:
    """Threads on a running server, as a client (--url, --user/--password or --token, --group).

    Errors from the server or the connection print their message and exit with status 3."""


@threads.command("start")
@client_options
@click.argument("job")
@click.argument("params", nargs=-1, metavar="[NAME=VALUE]...")
@click.option("--file", "files", multiple=True, metavar="NAME=PATH",
              help="A file to upload as the field NAME (repeatable)")
@click.option("--idempotency-key", help="Starting again with the same key starts nothing new")
@click.option("--wait", "wait_", is_flag=True, help="Then watch it, exiting as `watch` does")
@click.option("--timeout", type=float, help="With --wait: give up after this many seconds")
def threads_start(url: str, user: str | None, password: str | None, token: str | None,
                  group: str | None, job: str, params: tuple[str, ...], files: tuple[str, ...],
                  idempotency_key: str | None, wait_: bool, timeout: float | None) -> None:
    """Start JOB with its parameters; prints the thread id alone on stdout.

    With --wait, then shows its progress on stderr and exits 0 when it completed, 1 when it
    failed, 2 when it was cancelled (3 on errors)."""
    fields = dict(_pairs(params, "NAME=VALUE"))
    uploads: dict[str, list[str]] = {}
    for name, path in _pairs(files, "--file"):
        if not Path(path).is_file():
            raise click.BadParameter(f"{path!r} is not a file", param_hint="--file")
        uploads.setdefault(name, []).append(path)
    client = make_client(url, user, password, token, group)
    thread = calling(lambda: client.start(job, fields, uploads or None, idempotency_key))
    click.echo(thread.id)
    if wait_:
        sys.stdout.flush()
        raise click.exceptions.Exit(watch_thread(client, thread.id, timeout))


@threads.command("watch")
@client_options
@click.argument("thread_id", metavar="ID")
@click.option("--timeout", type=float, help="Give up (exit 3) after this many seconds")
def threads_watch(url: str, user: str | None, password: str | None, token: str | None,
                  group: str | None, thread_id: str, timeout: float | None) -> None:
    """Show a thread's progress live on stderr until it ends.

    Exit status: 0 completed, 1 failed, 2 cancelled, 3 on errors (or --timeout)."""
    client = make_client(url, user, password, token, group)
    raise click.exceptions.Exit(watch_thread(client, thread_id, timeout))


@threads.command("show")
@client_options
@click.argument("thread_id", metavar="ID")
def threads_show(url: str, user: str | None, password: str | None, token: str | None,
                 group: str | None, thread_id: str) -> None:
    """Print a thread, one `name: value` line per attribute."""
    client = make_client(url, user, password, token, group)
    thread = calling(lambda: client.get(thread_id))
    for item in dataclasses.fields(thread):
        value = getattr(thread, item.name)
        if value is not None:
            click.echo(f"{item.name}: {value}")


@threads.command("list")
@client_options
@click.option("--status", help="Comma list of statuses, or active (default), finished, all")
@click.option("--username", help="Only threads started by this user")
@click.option("--type", "job", help="Only threads of this job")
@click.option("--page", type=click.IntRange(min=1), help="Page, from 1")
@click.option("--pagesize", type=click.IntRange(1, 1000), help="Threads a page (default 100)")
def threads_list(url: str, user: str | None, password: str | None, token: str | None,
                 group: str | None, status: str | None, username: str | None, job: str | None,
                 page: int | None, pagesize: int | None) -> None:
    """List threads, newest first: id, status, job, user, progress, created, name."""
    client = make_client(url, user, password, token, group)
    found = calling(lambda: client.list_threads(
        status, username=username, type=job, page=page, pagesize=pagesize))
    for t in found.threads:
        done = f"{t.percent}%" if t.percent is not None else "-"
        click.echo(f"{t.id}  {t.status:<11} {t.type or '-':<10} {t.username:<12} {done:>4}  "
                   f"{t.created or '-'}  {t.name}")
    shown = len(found.threads)
    if found.total > shown:
        click.echo(f"({shown} of {found.total} on page {found.page}; see --page)", err=True)


@threads.command("logs")
@client_options
@click.argument("thread_id", metavar="ID")
@click.option("--level", type=click.Choice(["DEBUG", "INFO", "WARN", "ERROR"],
                                           case_sensitive=False), help="Minimum level")
def threads_logs(url: str, user: str | None, password: str | None, token: str | None,
                 group: str | None, thread_id: str, level: str | None) -> None:
    """Print a thread's log, one `DATETIME LEVEL text` line per event, oldest first."""
    client = make_client(url, user, password, token, group)

    def show() -> None:
        for entry in client.logs(thread_id, level.upper() if level else None):
            click.echo(entry.line())

    calling(show)


@threads.command("cancel")
@client_options
@click.argument("thread_id", metavar="ID")
def threads_cancel(url: str, user: str | None, password: str | None, token: str | None,
                   group: str | None, thread_id: str) -> None:
    """Cancel a thread; prints `ID STATUS` as it stands after the request."""
    client = make_client(url, user, password, token, group)
    thread = calling(lambda: client.cancel(thread_id))
    if thread is None:
        where = f" in group {group}" if group else ""
        click.echo(f"error: no thread {thread_id}{where}", err=True)
        raise click.exceptions.Exit(EXIT_ERROR)
    click.echo(f"{thread.id} {thread.status}")
