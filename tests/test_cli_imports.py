"""The CLI starts without the server: neither Starlette, Jinja nor the web layer is imported by
the `threadsvc` entry point, by `threads --help`, nor by an administrative command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SERVER_ONLY = ("starlette", "jinja2", "threadsvc.web", "threadsvc.app")

CHECK = """
import sys
{run}
loaded = sorted(m for m in sys.modules if any(m == s or m.startswith(s + ".") for s in {server!r}))
print("loaded:", *loaded)
"""

RUN_COMMAND = """
from threadsvc.cli import main
try:
    main({args!r})
except SystemExit as exc:
    assert exc.code in (0, None), exc.code
"""


def loaded_after(run: str) -> list[str]:
    code = CHECK.format(run=run, server=SERVER_ONLY)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    last = done.stdout.splitlines()[-1].split()
    assert last[0] == "loaded:", done.stdout
    return last[1:]


def test_importing_the_entry_point_loads_no_server() -> None:
    assert loaded_after("import threadsvc.cli") == []


@pytest.mark.parametrize("args", [["threads", "--help"], ["threads", "list", "--help"]])
def test_threads_help_loads_no_server(args: list[str]) -> None:
    assert loaded_after(RUN_COMMAND.format(args=args)) == []


def test_an_admin_command_loads_no_server(tmp_path: Path) -> None:
    args = ["user", "add", "--db", f"sqlite:///{tmp_path / 'cli.db'}", "alice"]
    assert loaded_after(RUN_COMMAND.format(args=args)) == []
