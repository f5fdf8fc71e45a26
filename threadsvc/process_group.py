"""Stopping a child process and everything it started: the `command` job's commands and the
jobs run in a process of their own (runner/child.py) each lead a process group of their own,
so that a cancel reaches whatever they left running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal

log = logging.getLogger(__name__)

EXIT_POLL_SECONDS = 0.02


async def terminate(process: asyncio.subprocess.Process, pgid: int, grace: float) -> None:
    """SIGTERM the group; SIGKILL it once the process ended or after `grace` seconds.

    Returns once the process has ended. A cancel arriving meanwhile kills at once, and is
    raised again after the process has ended, so that nothing is left running."""
    cancelled = False
    kill(pgid, signal.SIGTERM)
    try:
        await asyncio.wait_for(exited(process), grace)
    except TimeoutError:
        log.info("process group %d outlived its %g s grace; killing it", pgid, grace)
    except asyncio.CancelledError:
        cancelled = True
    kill(pgid, signal.SIGKILL)
    while True:
        try:
            await exited(process)
            break
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError


async def exited(process: asyncio.subprocess.Process) -> int:
    """The exit status, once the process has ended. Not `process.wait()`: on Python 3.11 that
    also waits for the end of its output, which a process left behind may hold open."""
    while (status := process.returncode) is None:  # noqa: ASYNC110 (no event tells it)
        await asyncio.sleep(EXIT_POLL_SECONDS)
    return status


def kill(pgid: int, sig: signal.Signals) -> None:
    """Signal the whole group; one already gone (or no longer ours) is no error."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)
