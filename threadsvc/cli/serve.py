"""`threadsvc serve`: the server under uvicorn, its log as threadsvc.logs writes it (uvicorn's
access log off: threadsvc.web.access writes its own). The web application is imported when
the command runs, not before."""

from __future__ import annotations

import logging
import os
import sys

import click

from threadsvc import admin, logs
from threadsvc.cli.admin import check_schema, refuse_foreign, run, settings_from, store_options
from threadsvc.settings import Settings, SettingsError


@click.command()
@store_options
@click.option("--host", help="Address to listen on (default 127.0.0.1)")
@click.option("--port", type=int, help="Port to listen on (default 8080)")
@click.option("--demo", is_flag=True, help="Create demo accounts and a group, print them, serve")
def serve(config: str | None, db: str | None, host: str | None, port: int | None, demo: bool) -> None:
    """Run the server."""
    import uvicorn

    from threadsvc.app import create_app, stop_waiting
    from threadsvc.jobs.command.settings import parse_commands
    from threadsvc.runner.schedules import parse_schedules
    from threadsvc.web import serving
    from threadsvc.web.serving import connection_limits, http_protocol, http_stack
    from threadsvc.web.urls import ProxyHeaders, check_settings

    settings = settings_from(config, db=db, host=host, port=port)
    try:
        parse_commands(settings.commands)  # a bad [commands] table is a usage error, not a crash
        parse_schedules(settings.schedules)  # their shape; their owners and jobs at start-up
        check_settings(settings)
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None
    refuse_foreign(settings, files=True)
    check_schema(settings)
    logs.setup(settings)
    if demo:
        accounts = run(settings, admin.ensure_demo, create=True)
        print_demo(settings, accounts)
    if "FORWARDED_ALLOW_IPS" in os.environ:
        logging.getLogger("threadsvc").warning(
            "FORWARDED_ALLOW_IPS is not read: the proxies trusted are the setting "
            "forwarded-allow-ips (THREADSVC_FORWARDED_ALLOW_IPS), now %s",
            ",".join(settings.forwarded_allow_ips) or "none")
    app = create_app(settings)
    loop, parser = http_stack(settings.http_stack)
    logging.getLogger("threadsvc").info("HTTP stack: %s + %s", loop, parser)
    uvicorn_config = uvicorn.Config(
        # uvicorn's proxy-header middleware, given the setting and X-Forwarded-Host
        ProxyHeaders(app, settings.forwarded_allow_ips),
        host=settings.host,
        port=settings.port,
        proxy_headers=False,
        timeout_graceful_shutdown=int(settings.shutdown_grace) + 5,
        log_level=settings.log_level,
        log_config=None,  # uvicorn's loggers reach the root logger's one handler
        access_log=False,
        loop=loop,
        http=http_protocol(
            settings.read_timeout,
            connection_limits(settings.max_connections, settings.max_running),
            settings.http_stack,
        ),
    )
    serving.serve(uvicorn_config, on_exit=lambda: stop_waiting(app))


def print_demo(settings: Settings, accounts: list[tuple[str, str, str]]) -> None:
    base = f"http://{settings.host}:{settings.port}/ps/service"
    click.echo("Demo accounts (passwords are new each time --demo runs):")
    for username, password, what in accounts:
        click.echo(f"  {username:18} {password:20} {what}")
    user, password = next((u, p) for u, p, _ in accounts if u == "demo-contributor")
    auth = f"-u {user}:{password}"
    click.echo("\nTry:")
    click.echo(f"  curl -i {auth} -d job=sleep -d seconds=20 {base}/groups/demo/threads")
    click.echo(f"  curl {auth} {base}/threads/THREAD_ID/progress")
    click.echo(f"  curl {auth} {base}/groups/demo/threads/THREAD_ID/logs")
    click.echo("")
    sys.stdout.flush()  # before uvicorn takes over, even when stdout is a pipe
