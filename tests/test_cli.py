"""The CLI translates arguments into calls on the store that `serve` uses."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import anyio
import httpx
import pytest
from click.testing import CliRunner

from tests.support import free_port
from threadsvc.cli import main
from threadsvc.identity import verify_password
from threadsvc.models import Role
from threadsvc.store.sqlite import SQLiteStore


def _store_state(path: Path, username: str) -> tuple[object, dict[int, Role]]:
    async def read() -> tuple[object, dict[int, Role]]:
        store = SQLiteStore(path)
        await store.open()
        try:
            found = await store.get_user(username)
            assert found is not None
            return found, await store.roles_of(found[0].id)
        finally:
            await store.close()

    return anyio.run(read)


def test_identity_commands(tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    url = f"sqlite:///{db}"
    runner = CliRunner()

    def ok(*args: str, input: str | None = None) -> str:
        result = runner.invoke(main, list(args), input=input)
        assert result.exit_code == 0, result.output
        return result.stdout

    ok("user", "add", "--db", url, "alice", "--admin", "--password", "s3cret")
    ok("user", "add", "--db", url, "bob", "--password-stdin", input="from stdin\n")
    token = ok("user", "token", "--db", url, "bob")
    assert re.fullmatch(r"tsv_[A-Za-z0-9_-]{40,}\n", token)
    client = ok("client", "add", "--db", url, "bob")
    assert re.fullmatch(r"client_id: tsc_[0-9a-f]+\nclient_secret: \S+\n", client)
    ok("group", "add", "--db", url, "dev-group", "--id", "240")
    ok("member", "add", "--db", url, "dev-group", "bob", "manager")
    (_bob, bob_hash), roles = _store_state(db, "bob")  # type: ignore[misc]
    assert verify_password("from stdin", bob_hash) and roles == {240: Role.MANAGER}
    (alice, _), _ = _store_state(db, "alice")  # type: ignore[misc]
    assert alice.is_admin

    again = runner.invoke(main, ["user", "add", "--db", url, "alice"])
    assert again.exit_code == 1 and "already exists" in again.output
    bad_group = runner.invoke(main, ["group", "add", "--db", url, "Bad Name"])
    assert bad_group.exit_code == 1 and "must match" in bad_group.output
    no_user = runner.invoke(main, ["member", "add", "--db", url, "dev-group", "carol", "manager"])
    assert no_user.exit_code == 1 and "no user 'carol'" in no_user.output
    bad_role = runner.invoke(main, ["member", "add", "--db", url, "dev-group", "bob", "boss"])
    assert bad_role.exit_code == 2
    both = runner.invoke(main, ["user", "add", "--db", url, "x", "--password", "a", "--password-stdin"])
    assert both.exit_code == 2

    ok("member", "remove", "--db", url, "dev-group", "bob")
    assert _store_state(db, "bob")[1] == {}
    not_member = runner.invoke(main, ["member", "remove", "--db", url, "dev-group", "bob"])
    assert not_member.exit_code == 1 and "not a member" in not_member.output
    ok("user", "revoke-token", "--db", url, input=token)
    twice = runner.invoke(main, ["user", "revoke-token", "--db", url], input=token)
    assert twice.exit_code == 1 and "no such API token" in twice.output
    empty = runner.invoke(main, ["user", "revoke-token", "--db", url], input="\n")
    assert empty.exit_code == 2


def test_config_file_names_the_store(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'db = "sqlite:///{tmp_path / "from-config.db"}"\n')
    result = CliRunner().invoke(main, ["user", "add", "--config", str(config), "carol"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "from-config.db").exists()


@pytest.mark.timeout(60)
def test_serve_demo(tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "threadsvc", "serve", "--demo", "--port", str(port),
         "--db", f"sqlite:///{tmp_path / 'demo.db'}"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=tmp_path,
    )
    try:
        assert process.stdout is not None
        lines = []
        while sum(line.startswith("  curl") for line in lines) < 3:
            lines.append(process.stdout.readline())
            assert lines[-1], "serve --demo ended its output early"
        accounts = {m[0]: m[1] for m in re.findall(r"^  (demo-\S+)\s+(\S+)", "".join(lines), re.MULTILINE)}
        assert set(accounts) == {"demo-admin", "demo-reviewer", "demo-contributor",
                                 "demo-manager", "demo-approver"}
        curl = [line for line in lines if line.startswith("  curl")]
        assert len(curl) == 3
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                httpx.get(f"{base}/health")
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        started = httpx.post(f"{base}/ps/service/groups/demo/threads",
                             auth=("demo-contributor", accounts["demo-contributor"]),
                             data={"job": "sleep", "seconds": "0.1"})
        assert started.status_code == 202
    finally:
        process.terminate()
        process.wait(20)


@pytest.mark.parametrize("name", ["", "a b", "tab\there", "colon:name", "system", "x" * 65,
                                  "bell\x07", "del\x7f", "zero\u200bwidth", "nbsp\u00a0",
                                  "line\u2028sep", " lead", "trail "])
def test_usernames_follow_one_rule(tmp_path: Path, name: str) -> None:
    """1 to 64 visible characters, no control characters, whitespace or ':', not `system`: the
    CLI refuses others as a usage error and creates nothing; Identity.add_user (which `--demo`
    and everything else that makes users call) refuses them too."""
    url = f"sqlite:///{tmp_path / 'names.db'}"
    result = CliRunner().invoke(main, ["user", "add", "--db", url, name, "--password", "pw"])
    assert result.exit_code == 2 and "username" in result.output, result.output

    async def direct() -> None:
        from threadsvc import admin
        from threadsvc.errors import BadParameter
        from threadsvc.settings import Settings

        async with admin.opened(Settings(db=url)) as a:
            with pytest.raises(BadParameter, match="username"):
                await a.identity.add_user(name, "pw", False)
            assert await a.store.list_users() == []

    anyio.run(direct)


def test_usernames_that_follow_the_rule(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'names.db'}"
    for name in ("x" * 64, "zoë", "a", "Systém", "user.name-1_2@example.org", "SYSTEM"):
        result = CliRunner().invoke(main, ["user", "add", "--db", url, name])
        assert result.exit_code == 0, (name, result.output)


def test_account_commands(tmp_path: Path) -> None:
    db = tmp_path / "accounts.db"
    url = f"sqlite:///{db}"
    runner = CliRunner()

    def call(*args: str, input: str | None = None, code: int = 0) -> str:
        result = runner.invoke(main, list(args), input=input)
        assert result.exit_code == code, result.output
        return result.output

    call("user", "add", "--db", url, "dana", "--password", "first")
    (dana, _), _ = _store_state(db, "dana")  # type: ignore[misc]
    call("user", "passwd", "--db", url, "dana", input="second\n")
    (after, second_hash), _ = _store_state(db, "dana")  # type: ignore[misc]
    assert verify_password("second", second_hash) and not verify_password("first", second_hash)
    assert after.credential_version == dana.credential_version + 1
    assert "standard input" in call("user", "passwd", "--db", url, "dana", input="\n", code=2)
    assert "no user 'erin'" in call("user", "passwd", "--db", url, "erin", input="x\n", code=1)

    call("user", "token", "--db", url, "dana")
    client_id = call("client", "add", "--db", url, "dana").split()[1]
    assert client_id in call("client", "list", "--db", url)
    call("user", "disable", "--db", url, "dana")
    assert "dana" in call("user", "list", "--db", url) and "disabled" in call(
        "user", "list", "--db", url)
    assert client_id not in call("client", "list", "--db", url)  # deleted with the tokens
    assert "no user 'dana'" in call("user", "token", "--db", url, "dana", code=1)
    assert "disabled: yes" in call("user", "show", "--db", url, "dana")
    call("user", "enable", "--db", url, "dana")
    assert "disabled: no" in call("user", "show", "--db", url, "dana")
    assert '"groups": {}' in call("user", "show", "--db", url, "dana", "--json")
    assert "no user 'erin'" in call("user", "show", "--db", url, "erin", code=1)
    listed = call("user", "list", "--db", url, "--json")
    assert '"username": "dana"' in listed and '"disabled": false' in listed

    client_id = call("client", "add", "--db", url, "dana").split()[1]
    call("client", "remove", "--db", url, client_id)
    assert "no client" in call("client", "remove", "--db", url, client_id, code=1)
    assert "no failed sign-ins" in call("user", "unlock", "--db", url, "dana")
    call("user", "remove", "--db", url, "dana")
    assert "no user 'dana'" in call("user", "remove", "--db", url, "dana", code=1)
    for command in ("disable", "enable"):
        assert "no user 'dana'" in call("user", command, "--db", url, "dana", code=1)


def test_demo_passwords_are_a_password_change(tmp_path: Path) -> None:
    """`serve --demo` gives its accounts new passwords each time: their sessions end."""
    from threadsvc import admin
    from threadsvc.settings import Settings

    async def twice() -> tuple[int, int]:
        async with admin.opened(Settings(db=f"sqlite:///{tmp_path / 'demo.db'}")) as a:
            await admin.ensure_demo(a)
            first = await a.store.get_user("demo-manager")
            await admin.ensure_demo(a)
            second = await a.store.get_user("demo-manager")
            assert first is not None and second is not None
            return first[0].credential_version, second[0].credential_version

    first, second = anyio.run(twice)
    assert second > first
