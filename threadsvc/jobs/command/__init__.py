"""`command`: runs a command that an administrator declared in the settings (docs/api.md#jobs).

settings.py checks the `[commands.NAME]` tables at start-up; job.py makes the one job `command`
of them; process.py runs a command in its own process group and turns its output into the
thread's log. No shell runs: a parameter replaces `{param}` inside one argv item and never
adds an item.
"""
