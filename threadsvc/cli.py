"""The `threadsvc` command: it only turns arguments into settings and calls."""

from __future__ import annotations

import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import click

from threadsvc import admin
from threadsvc.errors import ThreadsvcError
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

    from threadsvc.app import create_app

    settings = settings_from(config, db=db, host=host, port=port)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if demo:
        accounts = run(settings, admin.ensure_demo)
        print_demo(settings, accounts)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        proxy_headers=True,
        timeout_graceful_shutdown=int(settings.shutdown_grace) + 5,
        log_level="info",
    )


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
    if not username.strip() or len(username) > 100 or ":" in username:
        raise click.UsageError("a username is 1 to 100 characters, without ':'")
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
