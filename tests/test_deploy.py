"""The deploy files, checked by the tools that will read them: systemd's own `systemd-analyze`
on the unit, nginx's `-t` on the site, the compose file parsed and its nodes' settings loaded,
the Dockerfile's health check run against a real server, the examples against Settings, and
the sdist and the wheel built, the wheel installed into a fresh venv and served from elsewhere.

A test whose tool is missing skips saying so, but under CI (CI set, as .ci/run runs), where it
fails: .ci/run installs the tools.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tarfile
import time
import tomllib
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import yaml

from tests.support import Server, free_port, seed
from threadsvc.jobs.command.settings import parse_commands
from threadsvc.runner.schedules import parse_schedules
from threadsvc.settings import (
    _TABLES,
    PLACEHOLDER_KEY,
    SECRET_SETTINGS,
    Settings,
    SettingsError,
    _convert,
    load_settings,
    variable,
)

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
FIELDS = {f.name for f in dataclasses.fields(Settings)}


def run(*args: str | Path, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, check=False,
                          timeout=kwargs.pop("timeout", 120), **kwargs)


def tool(name: str) -> str:
    found = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)), None)
    if found is None and os.environ.get("CI"):
        pytest.fail(f"{name} is not installed: .ci/run installs it, CI never skips this")
    if found is None:
        pytest.skip(f"{name} is not installed here (.ci/run installs it)")
    return found


# -- the examples --------------------------------------------------------------------------

def example_lines(path: Path, pattern: str) -> list[tuple[str, str, bool]]:
    """(field, value, commented) for each setting line, up to the tables of the TOML file."""
    found = []
    for line in path.read_text().splitlines():
        if re.match(r"#?\s*\[", line):
            break  # the [commands.NAME] and [schedules.NAME] examples
        match = re.fullmatch(pattern, line)
        if match:
            name = match["name"].lower().replace("-", "_")
            found.append((name, match["value"], line.startswith("#")))
    return found


def check_example(lines: list[tuple[str, str, bool]], parse: Any) -> None:
    named = {name for name, _, _ in lines}
    assert named >= FIELDS - _TABLES, f"settings missing: {sorted(FIELDS - _TABLES - named)}"
    assert named <= FIELDS, f"no such settings: {sorted(named - FIELDS)}"
    default = Settings()
    for name in named & FIELDS:
        own = [(value, commented) for n, value, commented in lines if n == name]
        if name == "secret_key":  # its commented example is the refused placeholder, or empty
            assert all(PLACEHOLDER_KEY in value or parse(name, value) == () for value, _ in own)
            continue
        if any(not commented for _, commented in own):
            continue  # set for the deployment (and loaded by the tests below)
        values = [parse(name, value) for value, _ in own]
        assert getattr(default, name) in values, f"{name}: no line gives the default"


def test_the_toml_example_lists_every_setting_with_its_default() -> None:
    path = DEPLOY / "threadsvc.toml.example"

    def parse(name: str, value: str) -> Any:
        return _convert(name, tomllib.loads(f"x = {value}")["x"])

    check_example(example_lines(path, r"#?\s*(?P<name>[a-z0-9-]+) = (?P<value>.+)"), parse)
    every_line_on = "\n".join(  # each setting and table uncommented; one db (the other's alike)
        line.removeprefix("# ") for line in path.read_text().splitlines()
        if re.match(r"(# )?(\[|[a-z0-9-]+ = )", line) and not line.startswith("# db = "))
    document = tomllib.loads(every_line_on)
    assert set(parse_commands(document["commands"])) == {"greet"}
    assert set(parse_schedules(document["schedules"])) == {"nightly"}
    settings = load_settings(path, environ={})  # as shipped
    assert settings.public_url and settings.shutdown_grace == 30


def test_the_env_example_lists_every_setting_with_its_default() -> None:
    path = DEPLOY / "threadsvc.env.example"
    lines = example_lines(path, r"#?\s*THREADSVC_(?P<name>[A-Z0-9_]+)=(?P<value>.*)")
    names = FIELDS
    files = {name.removesuffix("_file") for name, _, _ in lines if name not in names}
    assert files == SECRET_SETTINGS  # every file form, and only those
    settings_lines = [line for line in lines if line[0] in names]
    check_example(settings_lines, _convert)
    environ = {variable(name): value for name, value, commented in settings_lines
               if not commented}
    assert load_settings(environ={**environ, "THREADSVC_DB": "postgresql://u@h/d"}).files == \
        "postgres"
    placeholder = {"THREADSVC_SECRET_KEY": PLACEHOLDER_KEY}
    with pytest.raises(SettingsError, match="placeholder"):  # uncommented as it is
        load_settings(environ=placeholder)


# -- compose and the Dockerfile -------------------------------------------------------------

def dockerfile() -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments left out."""
    text = re.sub(r"(?m)^\s*#.*\n", "", (DEPLOY / "Dockerfile").read_text())
    return [line.strip() for line in text.replace("\\\n", " ").splitlines() if line.strip()]


def dockerfile_env() -> dict[str, str]:
    found: dict[str, str] = {}
    for line in dockerfile():
        if line.startswith("ENV "):
            found.update(pair.split("=", 1) for pair in line.split()[1:])
    return found


def test_the_dockerfile_is_pinned_non_root_with_tini_and_a_volume() -> None:
    lines = dockerfile()
    image = next(line.split("=", 1)[1] for line in lines if line.startswith("ARG PYTHON_IMAGE="))
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", image)
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert any(line.startswith("VOLUME ") and "/var/lib/threadsvc" in line for line in lines)
    entry = next(json.loads(line.removeprefix("ENTRYPOINT ")) for line in lines
                 if line.startswith("ENTRYPOINT "))
    assert entry == ["/usr/bin/tini", "--"]
    assert any("apt-get install" in line and " tini" in line for line in lines)
    assert any(re.search(r"pip install \"\.\[", line) for line in lines)  # the fast stack with it
    for line in lines:  # what it copies is in the repository
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), source
    assert "THREADSVC_DB" not in dockerfile_env()  # it would clash with THREADSVC_DB_FILE


@pytest.mark.slow
def test_the_dockerfile_health_check_asks_ready(tmp_path: Path) -> None:
    line = next(line for line in dockerfile() if line.startswith("HEALTHCHECK "))
    command = json.loads(line.split(" CMD ", 1)[1])
    assert command[:2] == ["python", "-c"] and "/ready" in command[2]
    server = Server(tmp_path)
    seed(server.config)
    server.start()
    env = {**os.environ, "THREADSVC_PORT": str(server.port)}
    try:
        healthy = run(sys.executable, "-c", command[2], env=env)
        assert healthy.returncode == 0, healthy.stderr
    finally:
        server.stop()
    down = run(sys.executable, "-c", command[2], env=env)
    assert down.returncode != 0


def compose() -> dict[str, Any]:
    document = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert isinstance(document, dict)
    return document


def test_compose_restarts_gates_on_health_and_keeps_secrets_in_files() -> None:
    document = compose()
    services = document["services"]
    assert set(services) == {"postgres", "node1", "node2", "nginx"}
    for name, service in services.items():
        assert service.get("restart") in ("unless-stopped", "always"), name
    assert services["postgres"]["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    for name in ("node1", "node2"):
        assert services[name]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert {dep["condition"] for dep in services["nginx"]["depends_on"].values()} == \
        {"service_healthy"}  # the nodes' HEALTHCHECK (/ready)
    text = (DEPLOY / "compose.yaml").read_text()
    uncommented = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert not re.search(r"PASSWORD\s*:", uncommented)  # POSTGRES_PASSWORD_FILE only
    assert not re.search(r"://[^\s:/@]+:[^\s@]+@", uncommented)  # no URL with a password
    defined = set(document["secrets"])
    for name, service in services.items():
        assert set(service.get("secrets", [])) <= defined, name
    for secret in document["secrets"].values():
        assert secret["file"].startswith("./secrets/")


def test_a_compose_node_loads_its_settings(tmp_path: Path) -> None:
    """A node's environment as compose makes it (the image's ENV, env_file, environment), its
    secret files made: it loads, and trusts nginx's address alone."""
    document = compose()
    node = document["services"]["node1"]
    environ = dict(dockerfile_env())
    env_file = DEPLOY / node["env_file"].replace(".env", ".env.example")
    for line in env_file.read_text().splitlines():
        if line and not line.startswith("#"):
            key, value = line.split("=", 1)
            environ[key] = value
    key = secrets.token_urlsafe(48)
    made = {"secret-key": key, "db-url": "postgresql://threadsvc:pw-in-a-file@postgres/threadsvc"}
    for name, value in node["environment"].items():
        if name.endswith("_FILE"):
            secret = value.removeprefix("/run/secrets/")
            assert secret in node["secrets"]
            (tmp_path / secret).write_text(made[secret] + "\n")
            value = str(tmp_path / secret)
        environ[name] = value
    settings = load_settings(environ=environ)
    assert settings.secret_key == (key,) and settings.db == made["db-url"]
    assert settings.files_kind == "postgres" and settings.node == "node1"
    nginx = document["services"]["nginx"]["networks"]["threadsvc"]["ipv4_address"]
    assert settings.forwarded_allow_ips == (nginx,)
    grace = 2 * settings.shutdown_grace + 30
    assert node["stop_grace_period"] == f"{grace:g}s"


# -- systemd ---------------------------------------------------------------------------------

def unit_here(tmp_path: Path) -> Path:
    """The unit, its ExecStart pointed at this environment's threadsvc (verify checks that the
    program exists)."""
    program = Path(sys.executable).parent / "threadsvc"
    assert program.exists()
    unit = tmp_path / "threadsvc.service"
    unit.write_text((DEPLOY / "threadsvc.service").read_text()
                    .replace("/opt/threadsvc/venv/bin/threadsvc", str(program)))
    return unit


@pytest.mark.slow
def test_systemd_verifies_the_unit(tmp_path: Path) -> None:
    done = run(tool("systemd-analyze"), "verify", "--man=no", unit_here(tmp_path))
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


@pytest.mark.slow
def test_the_unit_exposure_is_3_or_less(tmp_path: Path) -> None:
    analyze = tool("systemd-analyze")
    unit = unit_here(tmp_path)
    done = run(analyze, "security", "--offline=yes", "--threshold=30", "--no-pager", unit)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    exposure = float(re.search(r"Overall exposure level for \S+: (\d+\.\d)", done.stdout)[1])
    assert exposure <= 3.0
    # the threshold does bite: the unit stripped of its hardening is refused
    bare = tmp_path / "bare" / "threadsvc.service"
    bare.parent.mkdir()
    bare.write_text(unit.read_text().split("# Hardening.")[0] + "\n[Install]\n"
                    "WantedBy=multi-user.target\n")
    assert run(analyze, "security", "--offline=yes", "--threshold=30", bare).returncode != 0


def test_the_unit_stop_timeout_follows_shutdown_grace() -> None:
    unit = (DEPLOY / "threadsvc.service").read_text()
    timeout = int(re.search(r"(?m)^TimeoutStopSec=(\d+)$", unit)[1])
    example = (DEPLOY / "threadsvc.env.example").read_text()
    grace = float(re.search(r"(?m)^THREADSVC_SHUTDOWN_GRACE=(\S+)$", example)[1])
    assert timeout == 2 * grace + 30
    for directive in ("UMask=0077", "CapabilityBoundingSet=\n", "SystemCallFilter=@system-service",
                      "RestrictNamespaces=yes", "LockPersonality=yes", "LimitNOFILE=65536",
                      "ReadWritePaths=/var/lib/threadsvc", "ProtectSystem=strict"):
        assert directive in unit


# -- nginx -----------------------------------------------------------------------------------

@pytest.mark.slow
def test_nginx_accepts_the_site(tmp_path: Path) -> None:
    """`nginx -t` on the site as shipped, but for what only a deployment has: its certificate
    (a self-signed one, made here) and node names that resolve (127.0.0.1)."""
    nginx, openssl = tool("nginx"), tool("openssl")
    made = run(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
               "-days", "1", "-keyout", tmp_path / "t.key", "-out", tmp_path / "t.crt")
    assert made.returncode == 0, made.stderr
    site = (DEPLOY / "nginx-threadsvc.conf").read_text()
    for old, new in (("/etc/nginx/tls/threadsvc.crt", tmp_path / "t.crt"),
                     ("/etc/nginx/tls/threadsvc.key", tmp_path / "t.key"),
                     ("node1:", "127.0.0.1:"), ("node2:", "127.0.0.2:")):
        assert old in site
        site = site.replace(old, str(new))
    (tmp_path / "site.conf").write_text(site)
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log stderr;\nevents {{}}\n"
        f"http {{\n access_log off;\n client_body_temp_path {tmp_path};\n"
        f" proxy_temp_path {tmp_path};\n include {tmp_path}/site.conf;\n}}\n")
    done = run(nginx, "-t", "-c", tmp_path / "nginx.conf", "-p", tmp_path)
    assert done.returncode == 0 and "test is successful" in done.stderr, done.stderr
    broken = tmp_path / "site.conf"
    broken.write_text(site.replace("keepalive_timeout 4s;", "keepalive_timeout;"))
    assert run(nginx, "-t", "-c", tmp_path / "nginx.conf", "-p", tmp_path).returncode != 0


def test_the_nginx_site_matches_the_server() -> None:
    site = (DEPLOY / "nginx-threadsvc.conf").read_text()
    size = re.search(r"client_max_body_size (\d+)m;", site)
    assert size and int(size[1]) * 1024 * 1024 == Settings().max_upload
    keepalive = re.search(r"keepalive_timeout (\d+)s;", site)
    idle = inspect.signature(uvicorn.Config).parameters["timeout_keep_alive"].default
    assert keepalive and int(keepalive[1]) < min(idle, Settings().read_timeout)
    assert "proxy_set_header Host $http_host;" in site
    assert "listen 443 ssl;" in site
    events = site.split("/events$", 1)[1].split("}", 1)[0]
    assert "proxy_buffering off;" in events


# -- packaging -------------------------------------------------------------------------------

@pytest.mark.slow
def test_the_sdist_carries_its_tests_and_the_license(tmp_path: Path) -> None:
    done = run(sys.executable, "-m", "build", "--sdist", "--outdir", tmp_path, ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (sdist,) = tmp_path.glob("threadsvc-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
        info = tar.extractfile(next(n for n in tar.getnames() if n.endswith("/PKG-INFO")))
        assert info is not None
        metadata = info.read().decode()
    for needed in ("LICENSE", "tests/conftest.py", "tests/support.py", "tests/test_deploy.py",
                   "examples/wordcount/pyproject.toml", "docs/api.md", "deploy/threadsvc.service",
                   "deploy/compose.yaml", "threadsvc/store/sql/sqlite/schema.sql"):
        assert needed in names, needed
    assert not any("__pycache__" in name for name in names)
    assert "License-Expression: Apache-2.0" in metadata and "License-File: LICENSE" in metadata


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_wheel_installs_into_a_fresh_venv_and_serves_from_elsewhere(tmp_path: Path) -> None:
    built = run(sys.executable, "-m", "build", "--wheel", "--outdir", tmp_path / "dist", ROOT,
                timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("threadsvc-*.whl")
    venv = tmp_path / "venv"
    assert run(sys.executable, "-m", "venv", venv).returncode == 0
    installed = run(venv / "bin" / "pip", "install", "-q", wheel, timeout=500)
    assert installed.returncode == 0, installed.stderr[-3000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("THREADSVC_", "PYTHON", "VIRTUAL_ENV"))}
    where = run(venv / "bin" / "python", "-c", "import threadsvc; print(threadsvc.__file__)",
                cwd=elsewhere, env=env)
    assert where.stdout.startswith(str(venv)), where.stdout + where.stderr
    port = free_port()
    log = (elsewhere / "serve.log").open("w")
    process = subprocess.Popen([venv / "bin" / "threadsvc", "serve", "--demo", "--port", str(port)],
                               cwd=elsewhere, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not health(port):
            assert process.poll() is None, (elsewhere / "serve.log").read_text()
            assert time.monotonic() < deadline, (elsewhere / "serve.log").read_text()
            time.sleep(0.2)
        assert httpx.get(f"http://127.0.0.1:{port}/ready").status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=60)
        log.close()
    served = (elsewhere / "serve.log").read_text()
    assert "demo-contributor" in served
    assert "HTTP stack: uvloop + httptools" in served  # dependencies on CPython and Linux
    assert (elsewhere / "threadsvc.db").exists()  # the store where it was started


def health(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health").text == "ok\n"
    except httpx.TransportError:
        return False
