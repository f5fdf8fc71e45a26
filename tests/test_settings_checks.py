"""The settings' checks: secrets read from files (`THREADSVC_X_FILE`), warnings for unknown
THREADSVC_* variables, refused secret keys, key fingerprints, and the store URL's password
never printed, by the loader and by the real `threadsvc` command."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import Server, seed
from threadsvc.keys import short_fingerprint
from threadsvc.settings import (
    MIN_SECRET_KEY,
    PLACEHOLDER_KEY,
    SECRET_SETTINGS,
    SettingsError,
    known_variables,
    load_settings,
)

KEY = "k" * MIN_SECRET_KEY
OTHER = "another-key-long-enough-to-be-accepted"
PASSWORD = "Pg-Secret-9431"
PG_URL = f"postgresql://threadsvc:{PASSWORD}@127.0.0.1:1/threadsvc"  # port 1: refused


def test_secrets_are_read_from_the_files_their_file_variables_name(tmp_path: Path) -> None:
    key_file, db_file = tmp_path / "key", tmp_path / "db"
    key_file.write_text(f"{KEY},{OTHER}\n")  # a list, as in THREADSVC_SECRET_KEY; newline dropped
    db_file.write_text("sqlite:///from-a-file.db\r\n")
    settings = load_settings(environ={"THREADSVC_SECRET_KEY_FILE": str(key_file),
                                      "THREADSVC_DB_FILE": str(db_file)})
    assert settings.secret_key == (KEY, OTHER)
    assert settings.db == "sqlite:///from-a-file.db"


def test_every_secret_setting_has_a_file_form() -> None:
    assert {"db", "secret_key"} <= SECRET_SETTINGS
    assert {"THREADSVC_DB_FILE", "THREADSVC_SECRET_KEY_FILE"} <= known_variables()
    assert "THREADSVC_MAX_RUNNING_FILE" not in known_variables()  # not a secret


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "cannot read"), ("\n  \n", "is empty"), (b"\xff\xfe", "not UTF-8")],
)
def test_a_bad_secret_file_is_refused_naming_the_variable(
        tmp_path: Path, content: str | bytes | None, message: str) -> None:
    path = tmp_path / "key"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(SettingsError, match=message) as raised:
        load_settings(environ={"THREADSVC_SECRET_KEY_FILE": str(path)})
    assert "THREADSVC_SECRET_KEY_FILE" in str(raised.value)


def test_a_setting_and_its_file_form_together_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text(KEY)
    with pytest.raises(SettingsError, match="both set") as raised:
        load_settings(environ={"THREADSVC_SECRET_KEY": OTHER,
                               "THREADSVC_SECRET_KEY_FILE": str(path)})
    assert KEY not in str(raised.value) and OTHER not in str(raised.value)


def test_unknown_variables_are_warned_about_naming_the_closest(
        caplog: pytest.LogCaptureFixture) -> None:
    environ = {
        "THREADSVC_MAX_RUNING": "3",  # a typo
        "THREADSVC_SECRETKEY": OTHER,  # a typo of a secret: its value is never shown
        "THREADSVC_SCHEDULES": "x",  # a table: the settings file only
        "THREADSVC_COMPLETELY_DIFFERENT": "1",
        "THREADSVC_MAX_RUNNING": "4", "THREADSVC_DB_FILE": os.devnull,  # known: no warning
        "THREADSVC_URL": "http://x", "THREADSVC_TOKEN": "t",  # the client's: no warning
        "OTHER_VARIABLE": "1",
    }
    with caplog.at_level(logging.WARNING, logger="threadsvc.settings"), \
            pytest.raises(SettingsError, match="is empty"):  # /dev/null: the warnings came first
        load_settings(environ=environ)
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 4, lines
    text = "\n".join(lines)
    assert "THREADSVC_MAX_RUNING is ignored; did you mean THREADSVC_MAX_RUNNING?" in text
    assert "THREADSVC_SECRETKEY is ignored; did you mean THREADSVC_SECRET_KEY?" in text
    assert "THREADSVC_SCHEDULES is not read" in text and "settings file only" in text
    assert "THREADSVC_COMPLETELY_DIFFERENT is ignored (see README, Settings)" in text
    assert OTHER not in text and "OTHER_VARIABLE" not in text


@pytest.mark.parametrize(
    "keys",
    [[PLACEHOLDER_KEY], [PLACEHOLDER_KEY.upper()], ["x" * (MIN_SECRET_KEY - 1)],
     [KEY, "short-old-key"]],  # a key that only verifies counts too
)
def test_placeholder_and_short_secret_keys_are_refused(keys: list[str], tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="setting 'secret-key'") as raised:
        load_settings(environ={"THREADSVC_SECRET_KEY": ",".join(keys)})
    assert "secrets.token_urlsafe" in str(raised.value)  # says how to make a good one
    config = tmp_path / "t.toml"
    config.write_text("secret-key = [" + ", ".join(f'"{k}"' for k in keys) + "]\n")
    with pytest.raises(SettingsError, match="setting 'secret-key'"):
        load_settings(config, environ={})


def test_the_repr_of_settings_shows_no_secret() -> None:
    settings = load_settings(environ={"THREADSVC_SECRET_KEY": KEY}, db=PG_URL.replace(":1/", "/"),
                             files="postgres")
    assert KEY not in repr(settings) and PASSWORD not in repr(settings)


def threadsvc(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("THREADSVC_")}
    return subprocess.run([sys.executable, "-m", "threadsvc", *args], check=False,
                          capture_output=True, text=True, env={**clean, **env}, cwd=cwd,
                          timeout=60)


@pytest.mark.slow
def test_key_fingerprint_prints_short_hashes_and_never_a_key(tmp_path: Path) -> None:
    done = threadsvc("key", "fingerprint", env={"THREADSVC_SECRET_KEY": f"{KEY},{OTHER}"},
                     cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"{short_fingerprint(KEY)}  signs",
                                        f"{short_fingerprint(OTHER)}  verifies"]
    assert short_fingerprint(KEY) != short_fingerprint(OTHER)
    # no key configured: the one generated and kept in the store, the same each time; none
    # while there is no store (the command does not make one)
    db = f"sqlite:///{tmp_path / 'store.db'}"
    missing = threadsvc("key", "fingerprint", "--db", db, env={}, cwd=tmp_path)
    assert missing.returncode == 1 and "no store at" in missing.stderr
    assert not (tmp_path / "store.db").exists()
    assert threadsvc("group", "add", "--db", db, "dev", env={}, cwd=tmp_path).returncode == 0
    first = threadsvc("key", "fingerprint", "--db", db, env={}, cwd=tmp_path)
    again = threadsvc("key", "fingerprint", "--db", db, env={}, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout == again.stdout and first.stdout.endswith("(generated, kept in the store)\n")
    refused = threadsvc("key", "fingerprint", env={"THREADSVC_SECRET_KEY": PLACEHOLDER_KEY},
                        cwd=tmp_path)
    assert refused.returncode == 2 and "placeholder" in refused.stderr  # click's usage error
    typo = threadsvc("key", "fingerprint", env={"THREADSVC_SECRET_KEY": KEY,
                                                "THREADSVC_MAX_RUNING": "3"}, cwd=tmp_path)
    assert typo.returncode == 0 and typo.stdout == f"{short_fingerprint(KEY)}  signs\n"
    assert "THREADSVC_MAX_RUNING is ignored; did you mean THREADSVC_MAX_RUNNING?" in typo.stderr


@pytest.mark.slow
def test_the_store_password_is_never_printed(tmp_path: Path) -> None:
    """Not by a command that cannot reach the store, by `serve` failing to start, by `--help`,
    nor when the URL comes from THREADSVC_DB_FILE."""
    url_file = tmp_path / "db-url"
    url_file.write_text(PG_URL + "\n")
    runs = [
        threadsvc("user", "list", "--db", PG_URL, env={}, cwd=tmp_path),
        threadsvc("serve", "--port", "1", env={"THREADSVC_DB_FILE": str(url_file),
                                               "THREADSVC_FILES": "postgres"}, cwd=tmp_path),
        threadsvc("key", "fingerprint", env={"THREADSVC_DB": PG_URL}, cwd=tmp_path),
        threadsvc("serve", "--help", env={"THREADSVC_DB": PG_URL}, cwd=tmp_path),
        threadsvc("serve", "--db", PG_URL.replace("postgresql", "mysql"), env={}, cwd=tmp_path),
    ]
    for done in runs:
        assert PASSWORD not in done.stdout + done.stderr, done.args
    assert all(done.returncode != 0 for done in runs[:3] + runs[4:]), [r.returncode for r in runs]
    assert "127.0.0.1" in runs[0].stderr + runs[1].stderr  # they did say what failed


@pytest.mark.slow
def test_serve_logs_the_signing_key_fingerprint(tmp_path: Path) -> None:
    server = Server(tmp_path)
    seed(server.config)
    server.start()
    server.stop()
    key = "test-secret-key-of-the-test-servers"  # tests/support.py Server's
    log = server.log.read_text()
    assert f"signing with the secret-key of fingerprint {short_fingerprint(key)}" in log
    assert key not in log
