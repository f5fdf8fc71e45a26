"""Files and directories that only the server's own user may read.

The store holds password and token hashes, webhook secrets and (unless `secret-key` is set)
the key that signs sessions, links and access tokens; results and uploads are the groups'
documents. Under the usual umask (022) they would be created readable by every local user, so
they are created with these modes whatever the umask (which can only take bits away).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import BinaryIO

FILE_MODE = 0o600
DIR_MODE = 0o700
log = logging.getLogger(__name__)


def make_dirs(path: Path) -> None:
    """`path` and any missing parent, each new one owner-only (existing ones are left)."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for directory in reversed(missing):
        directory.mkdir(mode=DIR_MODE, exist_ok=True)


def create(path: Path) -> BinaryIO:
    """A new or truncated file, open for writing; a new one is owner-only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0),
                 FILE_MODE)
    return os.fdopen(fd, "wb")


def restrict(path: Path) -> None:
    """Take group and other permissions away from an existing file (one made before this
    rule, or by hand); a file that is not ours is left as it is, saying so."""
    try:
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            os.chmod(path, mode & 0o700)
            log.warning("%s was readable by other users (mode %o): now %o", path, mode,
                        mode & 0o700)
    except FileNotFoundError:
        pass
    except PermissionError as exc:
        log.warning("%s may be readable by other users and cannot be changed: %s", path, exc)
