"""7. Files: where uploads and results are kept. For each file storage, the download throughput
of a 200 MiB result through a node (against the local file, sendfile), and what a start with a
1 MiB upload costs (against a start without one on the same storage).

Storages: `local` (data-dir, with SQLite), `postgres` (the store's own database) and `s3` (a
bucket of moto's S3 server, started here; files streamed through the node).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.bench.common import (
    USER,
    Figure,
    Results,
    Stores,
    bench_server,
    group_path,
    say,
    start_thread,
    wait_thread,
)
from tests.bench.sizes import Sizes

ITEM = "7 files"
JOBS = ["tests.bench.jobs", "tests.jobs_for_tests"]
MIB = 1024 * 1024
UPLOAD = os.urandom(MIB)


def run(results: Results, stores: Stores, sizes: Sizes, work: Path) -> None:
    baseline: float | None = None
    for storage, settings in storages(stores, work):
        directory = work / f"files-{storage}"
        settings = {"jobs": JOBS, **settings}
        with (
            bench_server(directory, settings.pop("db"), **settings) as (server, tokens),
            server.bearer(tokens[USER]) as client,
        ):
            speed = download(client, sizes.result_mib)
            plain, uploading = starts(client, sizes.upload_starts)
        say(f"  {storage}: {speed:.0f} MiB/s down; a start {plain:.1f} ms, "
            f"with 1 MiB {uploading:.1f} ms")
        if storage == "local":
            baseline = speed
        ratio = f"{speed / baseline:.2f}× the local file" if baseline else ""
        results.add(Figure(ITEM, f"download of a {sizes.result_mib} MiB result", storage,
                           speed, "MiB/s", note=ratio))
        results.add(Figure(ITEM, "a start with a 1 MiB upload (median)", storage, uploading,
                           "ms", higher_is_better=False,
                           note=f"{uploading - plain:+.1f} ms against a start without one"))


def storages(stores: Stores, work: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    yield "local", {"db": stores.url("sqlite", work / "files-local")}
    if "postgres" not in stores.names:
        return
    yield "postgres", {"db": stores.url("postgres", work / "files-pg"), "files": "postgres"}
    with s3_bucket(work) as (endpoint, bucket):
        yield "s3", {"db": stores.url("postgres", work / "files-s3"), "files": "s3",
                     "s3-endpoint": endpoint, "s3-bucket": bucket}


@contextmanager
def s3_bucket(work: Path) -> Iterator[tuple[str, str]]:
    """A bucket on moto's S3 server started here, the nodes given its credentials through
    the environment (boto's usual chain). moto keeps objects in memory: the figure is the
    node's work and the S3 protocol's, not a real object store's."""
    from tests.s3servers import start_moto

    directory = work / "moto"
    directory.mkdir(parents=True, exist_ok=True)
    server = start_moto(directory)
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"] = (
        server.access_key, server.secret_key)
    try:
        yield server.endpoint, server.new_bucket()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.stop()


def download(client: httpx.Client, mib: int) -> float:
    """MiB/s of the result's download (its link followed as a client would)."""
    thread_id = start_thread(client, "big-result", mib=mib)["id"]
    wait_thread(client, thread_id, lambda t: t["status"] == "completed", timeout=600)
    link = client.get(group_path(thread_id, "/result"))
    if link.status_code != 302:
        raise RuntimeError(f"result: {link.status_code} {link.text[:300]}")
    speeds = []
    for _ in range(3):
        received = 0
        t0 = time.perf_counter()
        with httpx.stream("GET", link.headers["location"], timeout=600) as body:
            for chunk in body.iter_bytes(MIB):
                received += len(chunk)
        if received != mib * MIB:
            raise RuntimeError(f"downloaded {received} bytes of {mib * MIB}")
        speeds.append(received / MIB / (time.perf_counter() - t0))
    return statistics.median(speeds)


def starts(client: httpx.Client, count: int) -> tuple[float, float]:
    """Median milliseconds of a start without an upload, and of one with 1 MiB."""
    def timed(**files: Any) -> float:
        data = {"job": "checksum", "label": "bench"} if files else {"job": "noop"}
        t0 = time.perf_counter()
        answer = client.post(group_path(), data=data, files=files or None)
        elapsed = (time.perf_counter() - t0) * 1000
        if answer.status_code != 202:
            raise RuntimeError(f"start: {answer.status_code} {answer.text[:300]}")
        return elapsed

    plain = [timed() for _ in range(count)]
    uploading = [timed(files=("upload.bin", UPLOAD)) for _ in range(count)]
    return statistics.median(plain), statistics.median(uploading)
