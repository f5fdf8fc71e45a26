"""A private PostgreSQL cluster for tests, or the server named by THREADSVC_TEST_POSTGRES.

    cluster = PostgresCluster.start()        # initdb + pg_ctl on a free port; or .external(dsn)
    dsn = cluster.new_database()             # an empty database of its own
    cluster.drop_database(dsn)
    cluster.stop()

The cluster runs from initdb and pg_ctl found in /usr/lib/postgresql/*/bin (the newest) or on
PATH, with its socket in a temporary directory and TCP on 127.0.0.1 only, and with durability
switched off (fsync, synchronous_commit, full_page_writes) for speed. PostgreSQL refuses to run
as root, so when the tests run as root the cluster belongs to and runs as the `postgres` user.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import conninfo, sql

ENV = "THREADSVC_TEST_POSTGRES"
RUN_AS = "postgres"  # the user the cluster runs as when the tests run as root


def bin_dir() -> Path | None:
    """Where initdb and pg_ctl are: the newest /usr/lib/postgresql/*/bin, else PATH."""
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    for candidate in versions:
        if (candidate / "initdb").is_file() and (candidate / "pg_ctl").is_file():
            return candidate
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl and Path(initdb).parent == Path(pg_ctl).parent:
        return Path(initdb).parent
    return None


def unavailable() -> str | None:
    """Why no PostgreSQL can be had for tests, or None when one can."""
    if os.environ.get(ENV):
        return None
    if bin_dir() is None:
        return (
            f"PostgreSQL tests skipped: no initdb and pg_ctl in /usr/lib/postgresql/*/bin or on "
            f"PATH, and {ENV} is not set (a DSN of a server where the tests may create databases)"
        )
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(RUN_AS)
        except KeyError:
            return (
                f"PostgreSQL tests skipped: running as root, and there is no '{RUN_AS}' user to "
                f"run the cluster as; set {ENV} to use a server instead"
            )
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PostgresCluster:
    """A server where tests create databases: `dsn` names its maintenance database."""

    dsn: str
    bin: Path | None = None  # set when this process started the cluster
    root: Path | None = None
    databases: list[str] = field(default_factory=list)

    # -- getting one ------------------------------------------------------------------------
    @classmethod
    def from_environment(cls) -> PostgresCluster:
        """The server in THREADSVC_TEST_POSTGRES when set, else a private cluster."""
        dsn = os.environ.get(ENV)
        return cls.external(dsn) if dsn else cls.start()

    @classmethod
    def external(cls, dsn: str) -> PostgresCluster:
        with psycopg.connect(dsn, connect_timeout=10):
            pass  # reachable, or fail now with the driver's reason
        return cls(dsn=dsn)

    @classmethod
    def start(cls, parent: Path | None = None) -> PostgresCluster:
        """initdb a new cluster in a temporary directory (under `parent`, which the `postgres`
        user must be able to reach when running as root) and start it on a free port."""
        found = bin_dir()
        if found is None:
            raise RuntimeError(unavailable() or "no PostgreSQL binaries")
        root = Path(tempfile.mkdtemp(prefix="threadsvc-pg-", dir=parent))
        cluster = cls(dsn="", bin=found, root=root)
        try:
            cluster._init()
            cluster._start()
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def _as_owner(self) -> dict[str, Any]:
        if os.geteuid() != 0:
            return {}
        entry = pwd.getpwnam(RUN_AS)
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def _cmd(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        assert self.bin is not None and self.root is not None
        return subprocess.run(
            [str(self.bin / args[0]), *args[1:]],
            cwd=self.root,
            env={**os.environ, "LC_ALL": "C", "TZ": "UTC"},
            capture_output=True,
            text=True,
            timeout=120,
            check=check,
            **self._as_owner(),
        )

    def _init(self) -> None:
        assert self.root is not None
        (self.root / "sock").mkdir()
        if os.geteuid() == 0:  # the cluster's files belong to the user it runs as
            entry = pwd.getpwnam(RUN_AS)
            for path in (self.root, self.root / "sock"):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        self._cmd(
            "initdb", "-D", str(self.root / "data"), "--auth=trust", "-U", "postgres",
            "--encoding=UTF8", "--no-sync",
        )

    def _start(self) -> None:
        assert self.root is not None
        last = ""
        for _ in range(3):  # another process may take the free port before the server does
            port = _free_port()
            options = (
                f"-p {port} -k {self.root / 'sock'} -c listen_addresses=127.0.0.1 "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                "-c max_connections=200"
            )
            done = self._cmd(
                "pg_ctl", "start", "-w", "-t", "60", "-D", str(self.root / "data"),
                "-l", str(self.root / "server.log"), "-o", options, check=False,
            )
            if done.returncode == 0:
                self.dsn = conninfo.make_conninfo(
                    host="127.0.0.1", port=port, user="postgres", dbname="postgres"
                )
                return
            log = self.root / "server.log"
            last = done.stderr + (log.read_text(errors="replace")[-2000:] if log.exists() else "")
        raise RuntimeError(f"PostgreSQL did not start:\n{last}")

    def stop(self) -> None:
        """Stop a cluster this process started and delete its files (no-op for a server)."""
        if self.bin is not None and self.root is not None:
            data = self.root / "data"
            if (data / "postmaster.pid").exists():
                self._cmd("pg_ctl", "stop", "-w", "-m", "immediate", "-D", str(data), check=False)
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    # -- databases --------------------------------------------------------------------------
    def new_database(self) -> str:
        """Create an empty database of its own; its DSN."""
        name = f"threadsvc_test_{secrets.token_hex(6)}"
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        self.databases.append(name)
        return conninfo.make_conninfo(self.dsn, dbname=name)

    def new_database_url(self) -> str:
        """Like new_database, as a `postgresql://` URL (what the `db` setting takes)."""
        parts = conninfo.conninfo_to_dict(self.new_database())
        user = parts.get("user") or "postgres"
        host = parts.get("host") or "127.0.0.1"
        auth = f"{user}:{parts['password']}" if parts.get("password") else str(user)
        return f"postgresql://{auth}@{host}:{parts.get('port') or 5432}/{parts['dbname']}"

    def drop_database(self, dsn: str) -> None:
        name = conninfo.conninfo_to_dict(dsn)["dbname"]
        assert isinstance(name, str)
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        if name in self.databases:
            self.databases.remove(name)
