"""The file storages that tests/test_files_contract.py runs its one suite on.

Each backend is an entry of BACKENDS: how to make a storage for one test (not yet opened) and
one that cannot be reached. A new backend is one more entry (and its marks, when it needs a
server the machine may lack: the suite skips it there).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from threadsvc.files.base import FileStorage

# (the test's request, a fresh directory of its own, a list to which it adds cleanups)
Factory = Callable[[pytest.FixtureRequest, Path, list[Callable[[], None]]], FileStorage]


@dataclass(frozen=True)
class Backend:
    make: Factory
    unreachable: Factory
    marks: tuple[pytest.MarkDecorator, ...] = ()


def _local(request: pytest.FixtureRequest, tmp: Path, cleanups: list[Callable[[], None]]
           ) -> FileStorage:
    from threadsvc.files.local import LocalFiles

    return LocalFiles(tmp / "data")


def _local_unreachable(request: pytest.FixtureRequest, tmp: Path,
                       cleanups: list[Callable[[], None]]) -> FileStorage:
    from threadsvc.files.local import LocalFiles

    (tmp / "a-file").write_bytes(b"")  # a root below a plain file can never be made
    return LocalFiles(tmp / "a-file" / "data")


def _postgres(request: pytest.FixtureRequest, tmp: Path, cleanups: list[Callable[[], None]]
              ) -> FileStorage:
    from tests.pg import PostgresCluster
    from threadsvc.files.postgres import PostgresFiles

    cluster: PostgresCluster = request.getfixturevalue("postgres")  # skips without PostgreSQL
    url = cluster.new_database_url()
    cleanups.append(lambda: cluster.drop_database(url))
    return PostgresFiles(url, timeout=5)


def _postgres_unreachable(request: pytest.FixtureRequest, tmp: Path,
                          cleanups: list[Callable[[], None]]) -> FileStorage:
    from threadsvc.files.postgres import PostgresFiles

    return PostgresFiles(f"postgresql://postgres:secret@127.0.0.1:{closed_port()}/x", timeout=2)


def _s3(request: pytest.FixtureRequest, tmp: Path, cleanups: list[Callable[[], None]]
        ) -> FileStorage:
    """On moto's server, a fresh bucket each time (s3rver mixes concurrent puts of one key:
    tests/s3servers.py)."""
    from tests.s3servers import S3Server

    server: S3Server = request.getfixturevalue("moto_s3")
    return server.files(prefix="threadsvc")


def _s3_unreachable(request: pytest.FixtureRequest, tmp: Path,
                    cleanups: list[Callable[[], None]]) -> FileStorage:
    from threadsvc.files.s3 import S3Files

    return S3Files(bucket="b", endpoint=f"http://127.0.0.1:{closed_port()}",
                   credentials=("key", "secret"))


BACKENDS: dict[str, Backend] = {
    "local": Backend(_local, _local_unreachable),
    "postgres": Backend(_postgres, _postgres_unreachable, (pytest.mark.postgres,)),
    "s3": Backend(_s3, _s3_unreachable),
}


def params(*leave_out: str) -> list[object]:
    """The backends as parameters, but those named."""
    return [pytest.param(name, marks=backend.marks) for name, backend in BACKENDS.items()
            if name not in leave_out]


def closed_port() -> int:
    """A port nothing listens on (it was free a moment ago)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])

