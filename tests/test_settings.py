from __future__ import annotations

from pathlib import Path

import pytest

from threadsvc.settings import Settings, SettingsError, load_settings


def test_defaults() -> None:
    settings = load_settings(environ={})
    assert settings == Settings()
    assert settings.db == "sqlite:///threadsvc.db" and settings.result_url_ttl == 300
    assert settings.thread_ttl == 30 * 24 * 3600 and settings.max_upload == 100 * 1024 * 1024
    assert settings.lockout_attempts == 5 and settings.lockout_seconds == 900
    assert settings.webhook_allow_private is False


def test_file_then_environment_then_flags(tmp_path: Path) -> None:
    config = tmp_path / "t.toml"
    config.write_text(
        'db = "sqlite:///from-file.db"\nmax-running = 3\nresult-ttl = 10\n'
        "secret-key = ['new-key-of-at-least-32-characters', 'old-key-of-at-least-32-characters']\n"
        '[commands.greet]\nargv = ["echo", "{who}"]\n'
    )
    environ = {"THREADSVC_MAX_RUNNING": "5", "THREADSVC_WEBHOOK_ALLOW_PRIVATE": "yes"}
    settings = load_settings(config, environ=environ, result_ttl=None, port=9000)
    assert settings.db == "sqlite:///from-file.db"
    assert settings.max_running == 5  # environment beats the file
    assert settings.result_ttl == 10  # an unset flag changes nothing
    assert settings.port == 9000
    assert settings.webhook_allow_private is True
    assert settings.secret_key == ("new-key-of-at-least-32-characters",
                                   "old-key-of-at-least-32-characters")
    assert settings.commands["greet"]["argv"] == ["echo", "{who}"]
    flagged = load_settings(config, environ=environ, max_running=7)
    assert flagged.max_running == 7


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"THREADSVC_MAX_RUNNING": "many"}, "max-running"),
        ({"THREADSVC_MAX_RUNNING": "-1"}, "max-running"),
        ({"THREADSVC_WEBHOOK_ALLOW_PRIVATE": "maybe"}, "webhook-allow-private"),
        ({"THREADSVC_SHUTDOWN_GRACE": "inf"}, "shutdown-grace"),
    ],
)
def test_bad_environment_values_name_the_setting(environ: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(environ=environ)


def test_booleans_from_environment() -> None:
    for word, value in [("1", True), ("true", True), ("no", False), ("0", False), ("FALSE", False)]:
        settings = load_settings(environ={"THREADSVC_WEBHOOK_ALLOW_PRIVATE": word})
        assert settings.webhook_allow_private is value


def test_unknown_or_unreadable_file(tmp_path: Path) -> None:
    config = tmp_path / "t.toml"
    config.write_text("max-runing = 3\n")
    with pytest.raises(SettingsError, match="unknown setting 'max-runing'"):
        load_settings(config, environ={})
    config.write_text("max-running = \n")
    with pytest.raises(SettingsError):
        load_settings(config, environ={})
    with pytest.raises(SettingsError, match="cannot read"):
        load_settings(tmp_path / "missing.toml", environ={})
