"""A 200 MiB result is written and served as a stream, whatever storage keeps it: the
server's memory stays flat."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pg import PostgresCluster
from tests.s3servers import S3Server
from tests.support import Server, running_server, wait_for

MIB = 200
pytestmark = pytest.mark.slow  # 200 MiB through each storage


@pytest.fixture(scope="module", params=["local", "postgres", "s3"])
def big(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server keeping its files in each storage: under data-dir (with SQLite), in the
    PostgreSQL store's own database, or in a bucket of moto's S3 server (streamed through the
    node: no s3-presign)."""
    settings: dict[str, object] = {"jobs": ["tests.jobs_for_tests"]}
    with pytest.MonkeyPatch.context() as env:
        if request.param == "postgres":
            cluster: PostgresCluster = request.getfixturevalue("postgres")
            settings.update(db=cluster.new_database_url(), files="postgres")
        if request.param == "s3":
            moto: S3Server = request.getfixturevalue("moto_s3")
            settings.update({"files": "s3", "s3-endpoint": moto.endpoint,
                             "s3-bucket": moto.new_bucket()})
            env.setenv("AWS_ACCESS_KEY_ID", moto.access_key)
            env.setenv("AWS_SECRET_ACCESS_KEY", moto.secret_key)
        for server, _ in running_server(tmp_path_factory.mktemp("big"), **settings):
            yield server


def rss_mib(server: Server) -> float:
    assert server.process is not None
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024  # type: ignore[union-attr]


@pytest.mark.timeout(300)
def test_200_mib_result_with_bounded_memory(big: Server, request: pytest.FixtureRequest) -> None:
    with big.client("contributor") as http:
        before = rss_mib(big)
        answer = http.post("/ps/service/groups/dev/threads", data={"job": "big-result", "mib": str(MIB)})
        assert answer.status_code == 202, answer.text
        progress = answer.headers["content-location"]
        done = wait_for(http, progress, lambda r: 'status="completed"' in r.text, timeout=240)
        assert f'size="{MIB * 1024 * 1024}"' in done.text
        after_writing = rss_mib(big)
        redirect = http.get(answer.headers["location"])
        assert redirect.status_code == 302
        received = 0
        with http.stream("GET", redirect.headers["location"]) as body:
            assert body.headers["content-length"] == str(MIB * 1024 * 1024)
            for chunk in body.iter_bytes():
                received += len(chunk)
        after_reading = rss_mib(big)
    assert received == MIB * 1024 * 1024
    storage = request.node.callspec.params["big"]
    print(f"\n{storage}: server RSS {before:.0f} MiB, {after_writing:.0f} after writing "
          f"{MIB} MiB, {after_reading:.0f} after serving it")
    # Neither writing nor serving held the result in memory (it is 200 MiB).
    assert after_writing - before < 50, (before, after_writing)
    assert after_reading - before < 50, (before, after_reading)
