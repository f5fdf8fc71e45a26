"""The deployment examples name only settings the server knows, with values it accepts."""

from __future__ import annotations

from pathlib import Path

from threadsvc.settings import load_settings

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def test_the_environment_example_loads() -> None:
    lines = (DEPLOY / "threadsvc.env.example").read_text().splitlines()
    environ = dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))
    assert environ and all(name.startswith("THREADSVC_") for name in environ)
    settings = load_settings(environ=environ)
    assert settings.files_kind == "postgres" and settings.forwarded_allow_ips == ("10.89.0.0/24",)


def test_the_settings_file_example_loads() -> None:
    load_settings(DEPLOY / "threadsvc.toml.example", environ={})
