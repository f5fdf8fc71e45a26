"""Real S3-compatible servers for tests, each started on a free port of 127.0.0.1.

    server = start_moto(directory)          # moto's standalone server (`moto[server]`)
    server = start_s3rver(directory)        # s3rver (npm), run with the machine's Node.js
    files = server.files(prefix="t/")       # an S3Files on a fresh bucket of its own, not opened
    server.stop()

moto speaks the S3 API as boto knows it, but accepts any credentials and any signature (unless
started by `start_moto_checking_signatures`), and never looks at a pre-signed link's
signature or lifetime. s3rver checks a link's lifetime (and its access key), so the tests of
links run against it; it checks no signature of version 4, which is what boto makes, in a
link or in a header. s3rver is installed from
the npm registry into `.cache/` of the project the first time (about 15 MB; npm must reach
the registry). Where it cannot be had the tests that need it skip, saying why, except under CI
(the `CI` environment variable), where they fail: a green CI never hides them.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from tests.support import free_port
from threadsvc.files.s3 import S3Files

S3RVER = "s3rver@3.7.1"
CACHE = Path(__file__).resolve().parent.parent / ".cache"


@dataclass
class S3Server:
    name: str
    endpoint: str
    access_key: str
    secret_key: str
    process: subprocess.Popen[bytes]
    log: Path
    buckets: list[str] = field(default_factory=list)

    def client(self) -> Any:
        """A plain boto3 client of the server, for looking behind S3Files' back."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
        )

    def new_bucket(self) -> str:
        bucket = f"t-{uuid.uuid4().hex[:20]}"
        self.client().create_bucket(Bucket=bucket)
        self.buckets.append(bucket)
        return bucket

    def files(self, bucket: str | None = None, **kwargs: Any) -> S3Files:
        """An S3Files on `bucket` (a fresh one when None), with this server's credentials."""
        return S3Files(
            bucket=bucket or self.new_bucket(),
            endpoint=self.endpoint,
            credentials=(self.access_key, self.secret_key),
            **kwargs,
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _wait(process: subprocess.Popen[bytes], port: int, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode}: {log.read_text()[-3000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"did not listen on {port} in {timeout:.0f} s: {log.read_text()[-3000:]}")


def _spawn(name: str, command: list[str], port: int, directory: Path) -> subprocess.Popen[bytes]:
    log = directory / f"{name}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "THREADSVC_"))}
    with open(log, "ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    _wait(process, port, log)
    return process


def start_moto(directory: Path) -> S3Server:
    port = free_port()
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    process = _spawn("moto", command, port, directory)
    # moto takes any credentials; these are only for boto's signing.
    return S3Server("moto", f"http://127.0.0.1:{port}", "testing", "testing", process,
                    directory / "moto.log")


def start_moto_checking_signatures(directory: Path) -> S3Server:
    """moto with its IAM checks on: requests signed with a wrong secret are refused (moto's
    own server is otherwise open to any). Its credentials are those of an IAM user allowed
    s3:*; moto answers links (query-string signatures) with a 500 in this mode."""
    server = start_moto(directory)
    anyone = {"endpoint_url": server.endpoint, "region_name": "us-east-1",
              "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    iam = boto3.client("iam", **anyone)
    iam.create_user(UserName="node")
    allow_s3 = {"Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
    iam.put_user_policy(UserName="node", PolicyName="s3", PolicyDocument=json.dumps(allow_s3))
    key = iam.create_access_key(UserName="node")["AccessKey"]
    httpx.post(f"{server.endpoint}/moto-api/reset-auth", content=b"0").raise_for_status()
    server.name, server.access_key, server.secret_key = (
        "moto (signatures checked)", key["AccessKeyId"], key["SecretAccessKey"])
    return server


def s3rver_unavailable() -> str | None:
    """Why s3rver cannot be run here, or None."""
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    return f"s3rver needs Node.js and npm; missing: {', '.join(missing)}" if missing else None


def install_s3rver() -> Path:
    """s3rver's entry script, installed into .cache/ once (into a scratch directory renamed
    into place, so an interrupted install is never taken for a finished one)."""
    home = CACHE / S3RVER.replace("@", "-")
    script = home / "node_modules" / "s3rver" / "bin" / "s3rver.js"
    if script.is_file():
        return script
    CACHE.mkdir(exist_ok=True)
    scratch = CACHE / f".{home.name}.{uuid.uuid4().hex}"
    try:
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--no-save", "--prefix", str(scratch),
             S3RVER],
            check=True, capture_output=True, timeout=300,
        )
        try:
            scratch.rename(home)
        except OSError:  # another session installed it meanwhile
            if not script.is_file():
                raise
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"npm install {S3RVER} failed: {exc.stderr.decode()[-2000:]}") from exc
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return script


def start_s3rver(directory: Path) -> S3Server:
    script = install_s3rver()
    port = free_port()
    data = directory / "s3rver-data"
    data.mkdir()
    # s3rver's continuation tokens (a listing of over 1000 keys) use DES, which OpenSSL 3 keeps
    # in its legacy provider.
    command = ["node", "--openssl-legacy-provider", str(script), "-d", str(data),
               "-a", "127.0.0.1", "-p", str(port), "--no-vhost-buckets"]
    process = _spawn("s3rver", command, port, directory)
    # s3rver's one account (it checks a link's access key, not its version 4 signature).
    return S3Server("s3rver", f"http://127.0.0.1:{port}", "S3RVER", "S3RVER", process,
                    directory / "s3rver.log")


def s3rver_or_skip(directory: Path) -> S3Server:
    """start_s3rver, or a skip saying why where it cannot be had (a failure under CI)."""
    reason = s3rver_unavailable()
    try:
        if reason is None:
            return start_s3rver(directory)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        reason = f"s3rver could not start: {exc}"
    assert reason is not None
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)
