"""`threadsvc user|client|group|member ...`: changes to the store, made with threadsvc.admin.

A change says what it did on standard error; what a script reads (a token, a client's secret,
a list) goes to standard output. Only `user add` and `group add` (and `serve`) may create a
store: every other command on a store that is not there says so and creates nothing. Run as
root on a store that belongs to another user, every command refuses (admin.foreign_owner)."""

from __future__ import annotations

import getpass
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import click

from threadsvc import admin
from threadsvc.cli import output
from threadsvc.errors import BadParameter, ThreadsvcError
from threadsvc.identity import check_username
from threadsvc.settings import Settings, SettingsError, load_settings
from threadsvc.store import redact
from threadsvc.store.migrate import NewerSchema, NotAStore, check_version, stored_version

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


def refuse_foreign(settings: Settings, files: bool = False) -> None:
    """As root, refuse a store (or, with `files`, a data-dir) of another user: what the command
    writes there would become root's, and the service could no longer write it."""
    found = admin.foreign_owner(settings, files)
    if found is not None:
        path, owner = found
        raise click.ClickException(
            f"{path} belongs to the user {owner}: run this command as that user "
            f"(sudo -u {owner} threadsvc ...), so that what it writes stays theirs")


def check_schema(settings: Settings) -> None:
    """Before `serve` starts: refuse a store whose schema is newer than this code knows, in one
    line rather than a failed start's traceback. Other trouble is left to the start, which says
    it as it always has (a store that is not there yet is created)."""
    async def found() -> int | None:
        try:
            return await stored_version(settings)
        except Exception:  # noqa: BLE001 (not there, unreachable, a bad URL: the start says it)
            return None

    version = anyio.run(found)
    try:
        if version is not None:
            check_version(version, "sqlite" if settings.sqlite_path is not None else "postgres")
    except NewerSchema as exc:
        raise click.ClickException(str(exc)) from None


def not_a_store(settings: Settings, exc: NotAStore) -> click.ClickException:
    where = "" if settings.sqlite_path is not None else f" ({redact(settings.db, settings.db)})"
    return click.ClickException(f"{exc}{where}; nothing was created: only serve, user add, "
                                "group add and import make a new store")


def run(settings: Settings, action: Callable[[admin.Admin], Awaitable[T]],
        create: bool = False) -> T:
    """Run `action` on the store; without `create`, a store that is not there is an error."""
    refuse_foreign(settings)

    async def main() -> T:
        async with admin.opened(settings, create) as opened:
            return await action(opened)

    return run_said(settings, main)


def run_said(settings: Settings, main: Callable[[], Awaitable[T]]) -> T:
    """anyio.run(main), with the errors a person should read as one line, exit 1."""
    try:
        return anyio.run(main)
    except NotAStore as exc:
        raise not_a_store(settings, exc) from None
    except (ThreadsvcError, SettingsError) as exc:
        raise click.ClickException(str(exc)) from None


def on_store(config: str | None, db: str | None,
             action: Callable[[admin.Admin], Awaitable[T]], create: bool = False) -> T:
    """Run `action` on the store that --config and --db name."""
    return run(settings_from(config, db=db), action, create)


def change(config: str | None, db: str | None,
           action: Callable[[admin.Admin], Awaitable[object]], done: str,
           create: bool = False) -> None:
    """Make one change on the store, then say `done` on standard error."""
    on_store(config, db, action, create)
    click.echo(done, err=True)


def read_password(option: str) -> str:
    """A password from standard input: asked twice, not echoed, at a terminal; else its first
    line. Empty is a usage error."""
    if sys.stdin.isatty():
        password = getpass.getpass("New password: ")
        if password and getpass.getpass("Again: ") != password:
            raise click.ClickException("the two passwords differ; nothing was changed")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise click.UsageError(f"give the new password on standard input ({option})")
    return password


def change_command(group: click.Group, name: str, argument: str,
                   action: Callable[[admin.Admin, str], Awaitable[object]], done: str,
                   doc: str) -> None:
    """`GROUP NAME ARGUMENT`: one change on the store, then `done` (with the argument's value
    for `{}`) on standard error."""

    @group.command(name, help=doc)
    @store_options
    @click.argument(argument)
    def command(config: str | None, db: str | None, **given: str) -> None:
        value = given[argument]
        change(config, db, lambda a: action(a, value), done.format(value))


@click.group()
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
    try:
        check_username(username)
    except BadParameter as exc:
        raise click.UsageError(str(exc)) from None
    if password_stdin:
        password = read_password("--password-stdin")
    change(config, db, lambda a: a.identity.add_user(username, password or None, is_admin, a.by),
           f"added user {username}" + (" (administrator)" if is_admin else ""), create=True)


@user.command("token")
@store_options
@click.argument("username")
def user_token(config: str | None, db: str | None, username: str) -> None:
    """Print a new API token for USERNAME, alone on stdout."""
    click.echo(on_store(config, db, lambda a: a.identity.new_api_token(username, a.by)))


@user.command("revoke-token")
@store_options
def user_revoke_token(config: str | None, db: str | None) -> None:
    """Revoke the API token read from standard input (kept off the command line, where other
    local users could see it). A running server refuses it within `auth-cache-seconds`."""
    token = sys.stdin.readline().strip()
    if not token:
        raise click.UsageError("give the token on standard input")
    change(config, db, lambda a: admin.revoke_token(a, token), "revoked the token")


@user.command("passwd")
@store_options
@click.argument("username")
def user_passwd(config: str | None, db: str | None, username: str) -> None:
    """Give USERNAME the password read from standard input (asked twice, not echoed, at a
    terminal); their console sessions end."""
    password = read_password("one line")
    change(config, db, lambda a: admin.set_password(a, username, password),
           f"changed the password of {username}")


@user.command("revoke-tokens")
@store_options
@click.argument("username")
def user_revoke_tokens(config: str | None, db: str | None, username: str) -> None:
    """End every credential of USERNAME but the password: their API tokens and OAuth clients
    are deleted (the clients' access tokens end with them) and their console sessions end. A
    running server refuses them within `auth-cache-seconds`."""
    tokens, clients = on_store(config, db, lambda a: admin.revoke_tokens(a, username))
    click.echo(f"revoked {tokens} API token(s) and {clients} client(s) of {username}; "
               "their sessions end", err=True)


change_command(user, "disable", "username", admin.disable_user, "disabled {}", """
    Refuse every credential of USERNAME (their threads stay); deletes their API tokens and
    OAuth clients, and ends their sessions and access tokens.""")
change_command(user, "enable", "username", admin.enable_user, "enabled {}", """
    Let a disabled USERNAME sign in again (their old tokens and clients stay deleted).""")
change_command(user, "remove", "username", admin.remove_user, "removed {}", """
    Remove USERNAME with their memberships, tokens and clients (their threads stay).""")


@user.command("unlock")
@store_options
@click.argument("username")
def user_unlock(config: str | None, db: str | None, username: str) -> None:
    """Lift a lockout of USERNAME after failed sign-ins (from every address)."""
    lifted = on_store(config, db, lambda a: admin.unlock_user(a, username))
    click.echo(f"unlocked {username}" if lifted else f"{username} had no failed sign-ins",
               err=True)


@user.command("list")
@store_options
@click.option("--json", "as_json", is_flag=True, help="JSON rather than a table")
def user_list(config: str | None, db: str | None, as_json: bool) -> None:
    """Every user: name, administrator or not, disabled or not."""
    output.users(on_store(config, db, admin.list_users), as_json)


@user.command("show")
@store_options
@click.argument("username")
@click.option("--json", "as_json", is_flag=True, help="JSON rather than lines")
def user_show(config: str | None, db: str | None, username: str, as_json: bool) -> None:
    """USERNAME: administrator or not, disabled or not, their role in each group, their number
    of API tokens and their OAuth clients."""
    output.user(on_store(config, db, lambda a: admin.show_user(a, username)), as_json)


@click.group("client")
def oauth_client() -> None:
    """OAuth 2 clients (client credentials)."""


@oauth_client.command("add")
@store_options
@click.argument("username")
def client_add(config: str | None, db: str | None, username: str) -> None:
    """Add an OAuth client acting as USERNAME; prints its id and secret."""
    client_id, secret = on_store(config, db, lambda a: a.identity.new_client(username, a.by))
    click.echo(f"client_id: {client_id}")
    click.echo(f"client_secret: {secret}")


change_command(oauth_client, "remove", "client_id", admin.remove_client, "removed client {}", """
    Remove a client; its access tokens end within `auth-cache-seconds`.""")


@oauth_client.command("list")
@store_options
@click.option("--json", "as_json", is_flag=True, help="JSON rather than a table")
def client_list(config: str | None, db: str | None, as_json: bool) -> None:
    """Every client: its id and the user it acts as."""
    output.clients(on_store(config, db, lambda a: a.store.list_oauth_clients()), as_json)


@click.group()
def group() -> None:
    """Groups."""


@group.command("add")
@store_options
@click.argument("name")
@click.option("--id", "group_id", type=click.IntRange(min=1), help="The group's id")
def group_add(config: str | None, db: str | None, name: str, group_id: int | None) -> None:
    """Add a group."""
    created = on_store(config, db, lambda a: admin.add_group(a, name, group_id), create=True)
    click.echo(f"added group {created.name} (id {created.id})", err=True)


@group.command("list")
@store_options
@click.option("--json", "as_json", is_flag=True, help="JSON rather than a table")
def group_list(config: str | None, db: str | None, as_json: bool) -> None:
    """Every group: name, id, number of members."""
    output.groups(on_store(config, db, admin.list_groups), as_json)


@click.group()
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
    change(config, db, lambda a: admin.add_member(a, group_name, username, role),
           f"{username} is {role} in {group_name}")


@member.command("list")
@store_options
@click.argument("group_name", metavar="GROUP")
@click.option("--json", "as_json", is_flag=True, help="JSON rather than a table")
def member_list(config: str | None, db: str | None, group_name: str, as_json: bool) -> None:
    """The members of GROUP: username, role, administrator or disabled."""
    output.members(on_store(config, db, lambda a: admin.members_of(a, group_name)), as_json)


@member.command("remove")
@store_options
@click.argument("group_name", metavar="GROUP")
@click.argument("username")
def member_remove(config: str | None, db: str | None, group_name: str, username: str) -> None:
    """Take USERNAME out of GROUP (a running server honours it within `auth-cache-seconds`)."""
    change(config, db, lambda a: admin.remove_member(a, group_name, username),
           f"{username} is no longer a member of {group_name}")
