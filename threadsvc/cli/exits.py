"""The exit statuses of every `threadsvc` command: one number for each meaning, so that a script
tells a usage error from an error, and each end of a watched thread from both.

0 and 1 and 2 are click's own (done, an error, a usage error); the others are threadsvc's.
"""

from __future__ import annotations

OK = 0  # done; a watched thread completed; `migrate --check`: nothing pending
ERROR = 1  # the server, the connection or the store refused or failed (click's ClickException)
USAGE = 2  # a bad command line or setting (click's UsageError)
FAILED = 3  # the watched thread failed
CANCELLED = 4  # the watched thread was cancelled
TIMEOUT = 5  # `--timeout` passed before the watched thread ended
PENDING = 6  # `migrate --check`: migrations are pending
