"""The `command` job: its parameters, level and role are those of the named command.

`command_job(settings)` checks every table at start-up (a SettingsError names the command and
the key) and makes the one job `command`, whose parameters are `name` and that command's own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from threadsvc.errors import BadParameter, Forbidden
from threadsvc.jobs.command.process import CommandFailed, run_command
from threadsvc.jobs.command.settings import Command, parse_commands
from threadsvc.models import Group, Principal, Role, Scope
from threadsvc.runner.context import Context
from threadsvc.runner.registry import JobSpec
from threadsvc.settings import Settings
from threadsvc.uploads import Upload


@dataclass(frozen=True)
class CommandJob(JobSpec):
    """The `command` job: its parameters, level and role are those of the named command."""

    commands: Mapping[str, Command] = field(default_factory=dict)

    def parse_params(self, fields: Iterable[tuple[str, str | Upload]]) -> dict[str, Any]:
        given: dict[str, str] = {}
        for key, raw in fields:
            if key in given:
                raise BadParameter(key, "is given more than once")
            if isinstance(raw, Upload):
                raise BadParameter(key, "must be text, not a file")
            given[key] = raw
        name = given.pop("name", None)
        if name is None or not name:
            raise BadParameter("name", "is required: the command to run")
        command = self.commands.get(name)
        if command is None:
            if not self.commands:
                raise BadParameter("name", "names no command: none is declared on this server")
            raise BadParameter("name", f"names no declared command: '{name[:40]}'")
        return {"name": command.name, **command.parse(given)}

    def check(self, who: Principal, group: Group | None, params: dict[str, Any]) -> None:
        """The named command's own level and role (the service checked the lowest of all)."""
        command = self.commands[params["name"]]
        if not command.level.allows(server_level=group is None):
            where = "at server level" if group is None else "in a group"
            raise BadParameter("name", f"command '{command.name}' cannot run {where}")
        if group is not None and not who.has_role(group.id, command.role):
            raise Forbidden(
                f"Command '{command.name}' needs the role {command.role.label} in '{group.name}'"
            )


def command_job(settings: Settings) -> CommandJob:
    """The `command` job for the commands of `settings` (raises SettingsError when one is bad)."""
    commands = parse_commands(settings.commands)
    levels = {command.level for command in commands.values()}
    if levels == {Scope.GROUP}:
        scope = Scope.GROUP
    elif levels == {Scope.SERVER}:
        scope = Scope.SERVER
    else:
        scope = Scope.BOTH
    group_roles = [c.role for c in commands.values() if c.level is not Scope.SERVER]
    role = min(group_roles, default=Role.CONTRIBUTOR)

    async def command(ctx: Context) -> None:
        """Run a command declared in the settings; its output is the thread's log."""
        name = ctx.params.get("name")
        declared = commands.get(name) if isinstance(name, str) else None
        if declared is None:
            raise CommandFailed(f"No command named '{name}' is declared on this server any more")
        values = declared.parse(
            {k: v for k, v in ctx.params.items() if k != "name" and isinstance(v, str)}
        )
        await run_command(ctx, declared, declared.argv_for(values))

    return CommandJob(
        name="command",
        fn=command,
        scope=scope,
        role=role,
        title="Command thread",
        description=(command.__doc__ or "").strip(),
        commands=commands,
    )
