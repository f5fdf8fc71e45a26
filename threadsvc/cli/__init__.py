"""The `threadsvc` command: it only turns arguments into settings and calls.

`serve` runs the server (serve.py); `user`, `client`, `group` and `member` change the store
(admin.py); `key fingerprint` tells the secret keys apart (keys.py); `files migrate` moves
uploads and results to another storage (files.py); `schedules list` shows the schedules and
their last ticks (schedules.py); `migrate` brings the store's schema up to date (migrate.py);
`audit` prints the audit log (audit.py); `job` and `node` are the administrators' controls
(controls.py); `backup`, `export` and `import` copy or move a
deployment (backup.py); `threads` is a client of a running server (client.py). Only `serve`
imports the web application, and only once it runs: the other commands start without
Starlette or the console.
"""

from __future__ import annotations

import click

from threadsvc.cli.admin import group, member, oauth_client, user
from threadsvc.cli.audit import audit
from threadsvc.cli.backup import COMMANDS as BACKUP_COMMANDS
from threadsvc.cli.client import threads
from threadsvc.cli.controls import job, node
from threadsvc.cli.files import files
from threadsvc.cli.keys import key
from threadsvc.cli.migrate import migrate
from threadsvc.cli.schedules import schedules
from threadsvc.cli.serve import serve


@click.group()
@click.version_option(package_name="threadsvc")
def main() -> None:
    """threadsvc: long-running, group-scoped jobs behind PageSeeder-compatible services."""


for command in (serve, user, oauth_client, group, member, threads, files, schedules, migrate,
                audit, key, job, node, *BACKUP_COMMANDS):
    main.add_command(command)
