"""A store URL's password is never echoed: not in start-up errors of `serve`, not in the
CLI's errors, not in any log line (the driver's pool logs each failed connection, and libpq
quotes a URL it cannot parse, password and all), not in /health, /metrics or error answers
once the server is running and PostgreSQL starts refusing it.

Against a real PostgreSQL whose role `pwuser` needs its password (scram-sha-256): a wrong
password, a host that does not resolve, a port that is not a number, a URL libpq cannot
parse, each with the password in plain and percent-encoded form; and a running server whose
password is changed under it, its connections cut."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import httpx
import psycopg
import pytest
from psycopg import conninfo, sql

from tests.pg import PostgresCluster
from tests.support import Server, free_port, seed, wait_for

pytestmark = pytest.mark.slow

PASSWORD = "Right-Pass-7fq2"  # the role's real one
WRONG = "Wr0ng-Kq7 zz/?#@Vt8-pw"  # characters that must be percent-encoded in a URL
ROLE = "pwuser"


@pytest.fixture(scope="module")
def cluster(postgres: PostgresCluster) -> Iterator[tuple[str, int]]:
    """(host, port) of the cluster, where ROLE must give its password over TCP."""
    if postgres.root is None:
        pytest.skip("needs a cluster started here (its pg_hba.conf is changed)")
    parts = conninfo.conninfo_to_dict(postgres.dsn)
    hba = postgres.root / "data" / "pg_hba.conf"
    saved = hba.read_text()
    hba.write_text(f"host all {ROLE} 127.0.0.1/32 scram-sha-256\n" + saved)
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
            sql.Identifier(ROLE), sql.Literal(PASSWORD)))
        conn.execute(sql.SQL("CREATE DATABASE pwdb OWNER {}").format(sql.Identifier(ROLE)))
        conn.execute("SELECT pg_reload_conf()")
    try:
        yield str(parts.get("host") or "127.0.0.1"), int(parts.get("port") or 5432)
    finally:
        hba.write_text(saved)
        with psycopg.connect(postgres.dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_reload_conf()")
            conn.execute("DROP DATABASE IF EXISTS pwdb WITH (FORCE)")
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(ROLE)))


def forms(password: str) -> list[str]:
    """The ways a password may show: as given, percent-encoded, and its longer pieces."""
    return [password, quote(password, safe=""), *(p for p in re.split(r"[ /?#@]", password)
                                                  if len(p) >= 6)]


def assert_hidden(text: str, *passwords: str) -> None:
    for password in passwords:
        for form in forms(password):
            assert form not in text, (form, text[-3000:])


def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "threadsvc", *args], input=stdin,
                          capture_output=True, text=True, timeout=120, check=False)


def urls(host: str, port: int) -> dict[str, str]:
    wrong = quote(WRONG, safe="")
    return {
        "wrong password": f"postgresql://{ROLE}:{wrong}@{host}:{port}/pwdb",
        "unknown host": f"postgresql://{ROLE}:{wrong}@no-such-host.invalid:{port}/pwdb",
        "port not a number": f"postgresql://{ROLE}:{wrong}@{host}:notaport/pwdb",
        "unparsable": f"postgresql://{ROLE}:{wrong}@[::1/pwdb",
        "bad option": f"postgres://{ROLE}:{wrong}@{host}:{port}/pwdb?sslmode=bogus",
        "another scheme": f"mysql://{ROLE}:{wrong}@{host}:{port}/pwdb",
    }


REASONS = {  # what the operator is told instead
    "wrong password": "password authentication failed",
    "unknown host": "no-such-host.invalid",
    "port not a number": "notaport",
    "unparsable": "***",
    "bad option": "sslmode",
    "another scheme": "unsupported URL",
}


def test_failing_to_open_the_store_says_why_without_the_password(
    cluster: tuple[str, int], tmp_path: Path
) -> None:
    cases = urls(*cluster)
    commands = {}
    for name, url in cases.items():
        commands[f"serve: {name}"] = ("serve", "--db", url, "--port", str(free_port()))
        commands[f"user add: {name}"] = ("user", "add", "--db", url, "bob", "--password-stdin")
        commands[f"user token: {name}"] = ("user", "token", "--db", url, "bob")
    with ThreadPoolExecutor(len(commands)) as pool:
        done = dict(zip(commands, pool.map(lambda a: run(*a, stdin="bob-password\n"),
                                           commands.values()), strict=True))
    for what, result in done.items():
        output = result.stdout + result.stderr
        assert result.returncode != 0, (what, output[-2000:])
        assert_hidden(output, WRONG)
        assert REASONS[what.split(": ", 1)[1]] in output, (what, output[-2000:])


def test_a_running_server_refused_by_postgresql(cluster: tuple[str, int], tmp_path: Path) -> None:
    host, port = cluster
    url = f"postgresql://{ROLE}:{quote(PASSWORD, safe='')}@{host}:{port}/pwdb"
    server = Server(tmp_path, db=url)
    seed(server.config)
    server.start()
    admin = psycopg.connect(f"host={host} port={port} user=postgres dbname=postgres",
                            autocommit=True)
    try:
        with server.client("admin") as http:
            for path in ("/health", "/metrics", "/ps/service/threads"):
                answer = http.get(path)
                assert answer.status_code == 200
                assert_hidden(answer.text + str(answer.headers), PASSWORD)
            admin.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                sql.Identifier(ROLE), sql.Literal("changed-" + PASSWORD)))
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE usename = %s", (ROLE,))
            refused = wait_for(http, "/ps/service/threads", lambda r: r.status_code == 503,
                               timeout=30)
            alive = http.get("/health")  # the process serves: ok, and nothing else
            assert (alive.status_code, alive.text) == (200, "ok\n")
            answers = [refused, http.get("/ready"), http.get("/metrics"),
                       http.post("/ps/service/groups/dev/threads", data={"job": "sleep"}),
                       httpx.get(f"{server.url}/ps/ui/threads")]
            for answer in answers:
                assert answer.status_code in (303, 401, 503), (answer.status_code, answer.text)
                assert_hidden(answer.text + str(answer.headers), PASSWORD)
    finally:
        admin.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(
            sql.Identifier(ROLE), sql.Literal(PASSWORD)))
        admin.close()
        server.stop()
    log = server.log.read_text()
    assert "password authentication failed" in log
    assert_hidden(log, PASSWORD, "changed-" + PASSWORD)
