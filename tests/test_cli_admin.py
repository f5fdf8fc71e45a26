"""The administration commands on a real store: the lists, revoking a user's tokens, a store that
is not there (or not threadsvc's), `migrate [--check]`, and a schema newer than the code."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner, Result

from tests.conftest import NewStore
from tests.pg import PostgresCluster
from tests.support import free_port
from threadsvc.cli import main
from threadsvc.store.migrate import latest_version, migration_files
from threadsvc.store.queries import migrations

NOT_CREATED = "nothing was created"
NEWER = "newer than this threadsvc knows"


def cli(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=input)


def ok(*args: str, input: str | None = None) -> str:
    result = cli(*args, input=input)
    assert result.exit_code == 0, result.output
    return result.stdout


def real_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`threadsvc ARGS` in its own process, with no THREADSVC_* variable of ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("THREADSVC_")}
    return subprocess.run([sys.executable, "-m", "threadsvc", *args], capture_output=True,
                          text=True, env=env, timeout=timeout, check=False)


# Every command but serve, user add and group add, as (arguments after --db URL, stdin).
def store_commands(url: str) -> list[tuple[list[str], str | None]]:
    on = ["--db", url]
    return [
        (["user", "token", *on, "ann"], None),
        (["user", "revoke-token", *on], "tsv_abc\n"),
        (["user", "revoke-tokens", *on, "ann"], None),
        (["user", "passwd", *on, "ann"], "pw\n"),
        (["user", "disable", *on, "ann"], None),
        (["user", "enable", *on, "ann"], None),
        (["user", "remove", *on, "ann"], None),
        (["user", "unlock", *on, "ann"], None),
        (["user", "list", *on], None),
        (["user", "show", *on, "ann"], None),
        (["client", "add", *on, "ann"], None),
        (["client", "remove", *on, "tsc_0"], None),
        (["client", "list", *on], None),
        (["group", "list", *on], None),
        (["member", "add", *on, "dev", "ann", "manager"], None),
        (["member", "list", *on, "dev"], None),
        (["member", "remove", *on, "dev", "ann"], None),
        (["migrate", *on], None),
        (["migrate", *on, "--check"], None),
        (["audit", *on], None),
    ]


# -- lists and revoking -------------------------------------------------------------------------
def test_lists_show_and_revoke_tokens(tmp_path: Path, new_store: NewStore) -> None:
    url = new_store(tmp_path)
    db = ["--db", url]
    ok("user", "add", *db, "ann", "--admin", "--password", "a")
    ok("user", "add", *db, "bob")
    ok("group", "add", *db, "dev", "--id", "240")
    ok("group", "add", *db, "empty")
    ok("member", "add", *db, "dev", "ann", "manager")
    ok("member", "add", *db, "dev", "bob", "reviewer")
    ok("user", "disable", *db, "bob")

    listed = json.loads(ok("group", "list", *db, "--json"))
    assert [(g["name"], g["members"]) for g in listed] == [("dev", 2), ("empty", 0)]
    assert listed[0]["id"] == 240
    table = ok("group", "list", *db).splitlines()
    assert table[0].split() == ["NAME", "ID", "MEMBERS"]
    assert table[1].split() == ["dev", "240", "2"] and table[2].split()[::2] == ["empty", "0"]

    assert json.loads(ok("member", "list", *db, "dev", "--json")) == [
        {"username": "ann", "role": "manager", "admin": True, "disabled": False},
        {"username": "bob", "role": "reviewer", "admin": False, "disabled": True}]
    members = ok("member", "list", *db, "dev").splitlines()
    assert members[0].split() == ["USERNAME", "ROLE"]
    assert members[1].split() == ["ann", "manager", "administrator"]
    assert members[2].split() == ["bob", "reviewer", "disabled"]
    assert ok("member", "list", *db, "empty") == ""
    missing = cli("member", "list", *db, "nope")
    assert missing.exit_code == 1 and "no group 'nope'" in missing.output

    ok("user", "token", *db, "ann")
    ok("user", "token", *db, "ann")
    client_id = ok("client", "add", *db, "ann").split()[1]
    shown = json.loads(ok("user", "show", *db, "ann", "--json"))
    assert shown["api_tokens"] == 2 and shown["clients"] == [client_id]
    assert shown["groups"] == {"dev": "manager"}
    lines = ok("user", "show", *db, "ann").splitlines()
    assert "api tokens: 2" in lines and f"client: {client_id}" in lines

    revoked = cli("user", "revoke-tokens", *db, "ann")
    assert revoked.exit_code == 0, revoked.output
    assert "revoked 2 API token(s) and 1 client(s) of ann" in revoked.stderr
    shown = json.loads(ok("user", "show", *db, "ann", "--json"))
    assert shown["api_tokens"] == 0 and shown["clients"] == []
    assert client_id not in ok("client", "list", *db)
    again = cli("user", "revoke-tokens", *db, "ann")
    assert again.exit_code == 0 and "revoked 0 API token(s) and 0 client(s)" in again.stderr
    nobody = cli("user", "revoke-tokens", *db, "carl")
    assert nobody.exit_code == 1 and "no user 'carl'" in nobody.output


# -- a store that is not there -------------------------------------------------------------------
def test_a_missing_sqlite_store_is_refused_and_nothing_is_created(tmp_path: Path) -> None:
    store = tmp_path / "typo" / "threadsvc.db"
    url = f"sqlite:///{store}"
    for args, stdin in store_commands(url):
        result = cli(*args, input=stdin)
        assert result.exit_code == 1, (args, result.output)
        assert f"no store at {store}" in result.output and NOT_CREATED in result.output, args
    assert list(tmp_path.iterdir()) == []  # not even the directory

    # user add and group add make one; the others then work on it
    ok("group", "add", "--db", url, "dev")
    ok("user", "add", "--db", url, "ann")
    assert ok("user", "list", "--db", url).split() == ["ann"]


def test_a_foreign_sqlite_file_is_left_alone(tmp_path: Path) -> None:
    """An SQLite database of something else (or an empty file): not a store, and not changed,
    not even to WAL mode."""
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE notes (text TEXT)")
    conn.close()
    empty = tmp_path / "empty.db"
    empty.touch()
    for path in (other, empty):
        before = path.read_bytes()
        for args in (["user", "list"], ["migrate"], ["migrate", "--check"]):
            result = cli(*args, "--db", f"sqlite:///{path}")
            assert result.exit_code == 1, result.output
            assert "is not a threadsvc store" in result.output and NOT_CREATED in result.output
        assert path.read_bytes() == before
        assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.db", "other.db"]


@pytest.mark.slow
def test_a_postgres_database_without_the_schema_is_not_a_store(
    postgres: PostgresCluster,
) -> None:
    url = postgres.new_database_url()
    for args, stdin in store_commands(url):
        result = cli(*args, input=stdin)
        assert result.exit_code == 1, (args, result.output)
        assert "holds no threadsvc store" in result.output, (args, result.output)
        assert NOT_CREATED in result.output
    with psycopg.connect(url) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        assert tables.fetchone() == (0,)
    ok("user", "add", "--db", url, "ann")
    assert ok("user", "list", "--db", url).split() == ["ann"]
    missing = cli("user", "list", "--db", url.rsplit("/", 1)[0] + "/no_such_database")
    assert missing.exit_code == 1 and "no_such_database" in missing.output


# -- migrations ---------------------------------------------------------------------------------
def old_sqlite_store(path: Path, version: int) -> None:
    """A SQLite store as a threadsvc of schema `version` left it."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    conn.execute("INSERT INTO schema_version VALUES (?)", (version,))
    for number, script in migrations("sqlite"):
        if number <= version:
            conn.executescript(script)
    conn.close()


def test_migrate_check_then_migrate(tmp_path: Path) -> None:
    store = tmp_path / "old.db"
    latest = latest_version("sqlite")
    old_sqlite_store(store, latest - 2)
    url = f"sqlite:///{store}"
    check = cli("migrate", "--db", url, "--check")
    assert check.exit_code == 6, check.output
    names = dict(migration_files("sqlite"))
    assert check.stdout.splitlines() == [
        f"{v:04d} {names[v]}" for v in (latest - 1, latest)]
    assert f"schema version {latest - 2}" in check.stderr
    assert _sqlite_version(store) == latest - 2  # --check changed nothing
    assert [p.name for p in tmp_path.iterdir()] == ["old.db"]  # and left no -wal or -shm

    done = cli("migrate", "--db", url)
    assert done.exit_code == 0, done.output
    assert done.stdout.splitlines() == check.stdout.splitlines()
    assert f"from schema version {latest - 2} to {latest}" in done.stderr
    assert _sqlite_version(store) == latest

    for args in (["migrate"], ["migrate", "--check"]):
        again = cli(*args, "--db", url)
        assert again.exit_code == 0 and again.stdout == "", again.output
        assert "nothing to migrate" in again.stderr


@pytest.mark.slow
def test_migrate_check_then_migrate_on_postgres(postgres: PostgresCluster) -> None:
    url = postgres.new_database_url()
    latest = latest_version("postgres")
    with psycopg.connect(url, autocommit=True) as pg:
        pg.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        pg.execute("INSERT INTO schema_version VALUES (%s)", (latest - 2,))
        for number, script in migrations("postgres"):
            if number <= latest - 2:
                pg.execute(script)  # a whole script, no parameters
    check = cli("migrate", "--db", url, "--check")
    assert check.exit_code == 6, check.output
    names = dict(migration_files("postgres"))
    assert check.stdout.splitlines() == [f"{v:04d} {names[v]}" for v in (latest - 1, latest)]
    done = cli("migrate", "--db", url)
    assert done.exit_code == 0 and done.stdout == check.stdout, done.output
    with psycopg.connect(url) as pg:
        assert pg.execute("SELECT version FROM schema_version").fetchone() == (latest,)
    again = cli("migrate", "--db", url, "--check")
    assert again.exit_code == 0 and again.stdout == "", again.output


def _sqlite_version(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT version FROM schema_version").fetchone()[0])
    finally:
        conn.close()


def _everything() -> list[tuple[list[str], str | None]]:
    return [(["user", "list"], None), (["user", "add", "zed"], None),
            (["group", "add", "g2"], None), (["migrate"], None), (["migrate", "--check"], None),
            (["user", "passwd", "ann"], "pw\n")]


@pytest.mark.slow
def test_a_newer_schema_is_refused(tmp_path: Path, new_store: NewStore) -> None:
    """An old binary on a store a newer one migrated: every command, and serve, refuse it with
    one line, and change nothing."""
    url = new_store(tmp_path)
    ok("user", "add", "--db", url, "ann")
    newer = latest_version("postgres" if url.startswith("postgresql") else "sqlite") + 1
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            conn.execute("UPDATE schema_version SET version = ?", (newer,))
        conn.close()
    else:
        with psycopg.connect(url) as pg:
            pg.execute("UPDATE schema_version SET version = %s", (newer,))
    for args, stdin in _everything():
        result = cli(*args[:2], "--db", url, *args[2:], input=stdin)
        assert result.exit_code == 1, (args, result.output)
        assert f"schema is version {newer}, {NEWER}" in result.output, (args, result.output)
    served = real_cli("serve", "--db", url, "--port", str(free_port()), timeout=60)
    assert served.returncode == 1, served.stderr[-2000:]
    assert NEWER in served.stderr and "Traceback" not in served.stderr
    if url.startswith("sqlite"):
        assert _sqlite_version(Path(url.removeprefix("sqlite:///"))) == newer
    else:
        with psycopg.connect(url) as pg:
            assert pg.execute("SELECT version FROM schema_version").fetchone() == (newer,)
            names = pg.execute("SELECT count(*) FROM users WHERE username = 'zed'").fetchone()
            assert names == (0,)


def test_the_store_refuses_a_newer_schema_when_opened(tmp_path: Path) -> None:
    """The store itself refuses, not only the commands' check: a node started however it is."""
    import anyio

    from threadsvc.store.migrate import NewerSchema
    from threadsvc.store.sqlite import SQLiteStore

    path = tmp_path / "s.db"
    ok("user", "add", "--db", f"sqlite:///{path}", "ann")
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE schema_version SET version = version + 1")
    conn.close()

    async def open_it() -> None:
        store = SQLiteStore(path)
        with pytest.raises(NewerSchema, match=NEWER):
            await store.open()

    anyio.run(open_it)


# -- root on another user's store ---------------------------------------------------------------
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_root_refuses_another_users_store(tmp_path: Path) -> None:
    import pwd

    owner = pwd.getpwnam("postgres")
    home = tmp_path / "service"
    home.mkdir()
    store = home / "threadsvc.db"
    url = f"sqlite:///{store}"
    ok("user", "add", "--db", url, "ann")
    for path in [home, *home.iterdir()]:
        os.chown(path, owner.pw_uid, owner.pw_gid)
    before = sorted(home.iterdir())

    for args, stdin in [*store_commands(url), (["user", "add", "--db", url, "bob"], None),
                        (["group", "add", "--db", url, "g"], None)]:
        result = cli(*args, input=stdin)
        assert result.exit_code == 1, (args, result.output)
        assert f"{store} belongs to the user postgres" in result.output, result.output
        assert "sudo -u postgres threadsvc" in result.output
    served = real_cli("serve", "--db", url, "--port", str(free_port()))
    assert served.returncode == 1 and "sudo -u postgres" in served.stderr, served.stderr
    assert sorted(home.iterdir()) == before
    assert all(p.stat().st_uid == owner.pw_uid for p in home.iterdir())

    # a new store in the service's directory would be root's: refused too
    fresh = home / "new.db"
    made = cli("user", "add", "--db", f"sqlite:///{fresh}", "ann")
    assert made.exit_code == 1 and f"{home} belongs to the user postgres" in made.output
    assert not fresh.exists()
    # root's own store is root's business
    ok("user", "add", "--db", f"sqlite:///{tmp_path / 'root.db'}", "ann")
