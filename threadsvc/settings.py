"""One frozen Settings: defaults, then a TOML file, then THREADSVC_* variables, then flags.

A setting `x-y` is the TOML key `x-y`, the variable `THREADSVC_X_Y` and the field `x_y`. A
secret setting (`SECRET_SETTINGS`) may instead be read from a file named by `THREADSVC_X_Y_FILE`
(docker and compose secrets, systemd credentials), so that it need not sit in the environment
or the settings file.

Threat model: the settings are the operator's, but their mistakes must not pass in silence. A
mistyped variable is warned about, naming the closest known one; a `secret-key` copied from
the examples, or short enough to be guessed offline from one signed link, is refused; no
message, nor the Settings' repr, shows a secret's value (the store URL carries a password).
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os
import re
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class SettingsError(ValueError):
    """A setting has a bad value or an unknown name."""


@dataclass(frozen=True)
class Settings:
    db: str = field(default="sqlite:///threadsvc.db", repr=False)  # may carry a password
    host: str = "127.0.0.1"
    port: int = 8080
    # The first key signs; every key verifies, so a key can be rotated without breaking links.
    # Empty: a key generated once and kept in the store.
    secret_key: tuple[str, ...] = field(default=(), repr=False)
    data_dir: str = "threadsvc-data"
    # Where results and uploads are kept: `local` (under data-dir), `postgres` (the store's
    # database) or `s3`; empty: `local` with SQLite, `postgres` with a PostgreSQL store.
    files: str = ""
    files_shared: bool = False  # `local` files on a directory every node mounts
    s3_endpoint: str = ""
    s3_bucket: str = ""
    s3_prefix: str = ""
    s3_region: str = ""
    s3_presign: bool = False  # result links are the bucket's own pre-signed URLs
    node: str = ""  # this node's id; empty: host name and process id
    public_url: str = ""  # how clients reach the server: the base of every URL it sends
    # Peers (addresses, networks, or "*" alone) whose X-Forwarded-Proto, -For and -Host are
    # believed: the proxies in front. Others' are ignored.
    forwarded_allow_ips: tuple[str, ...] = ("127.0.0.1", "::1")
    max_running: int = 16
    # While other groups' threads wait, a group is given at most this share of the node's slots
    # (at least one), and a user at most this share of the group's (store/fair.py).
    max_running_share: float = 0.5
    max_active_per_user: int = 100
    max_active_per_group: int = 1000
    max_streams_per_user: int = 50  # open event streams and long-polls
    # Connections served at once (beyond: 503); 0: three quarters of what the open-file limit
    # leaves once the store, files and `max-running` jobs have theirs.
    max_connections: int = 0
    result_url_ttl: int = 300
    result_ttl: int = 3600
    thread_ttl: int = 30 * 24 * 3600
    purge_interval: float = 300.0  # how often to look for results and threads to delete
    audit_ttl: int = 90 * 24 * 3600  # seconds an audit log entry is kept; 0: for ever
    lease_timeout: int = 30
    max_upload: int = 100 * 1024 * 1024
    max_upload_file: int = 100 * 1024 * 1024  # one uploaded file
    max_large_bodies: int = 8  # bodies above 1 MiB (or chunked) read at once; others wait
    lockout_attempts: int = 5
    lockout_seconds: int = 900
    # Count failed sign-ins per username and client address rather than per username: a
    # stranger can no longer lock a user out, but each address gets its own attempts.
    lockout_per_address: bool = False
    webhook_allow_private: bool = False
    max_webhooks_per_group: int = 20  # the server's own webhooks count as one more group's
    max_webhooks: int = 1000
    # Past this, a webhook's oldest pending deliveries are given up (logged as such).
    max_pending_deliveries: int = 10_000
    shutdown_grace: float = 10.0
    # Seconds a connection has to send a request's headers (from connecting, or from its last
    # response); a body must keep arriving at 1 KiB/s on average once this time has passed.
    read_timeout: float = 12.0
    access_token_ttl: int = 3600
    # A secret: the bearer token that may read /metrics besides administrators (empty: none).
    metrics_token: str = field(default="", repr=False)
    # Seconds a checked token and a user's roles are reused: a revoked token, a removed member
    # or a changed role takes effect within this time (0: read the store on every request).
    auth_cache_seconds: float = 2.0
    jobs: tuple[str, ...] = ()  # extra modules whose @job functions are registered
    commands: Mapping[str, Any] = field(default_factory=dict)
    schedules: Mapping[str, Any] = field(default_factory=dict)  # runner/schedules.py
    log_format: str = "text"  # or "json": one object a line (threadsvc/logs.py)
    log_level: str = "info"  # debug, info, warning or error
    # "auto": uvloop and httptools when installed (they are where they build), else asyncio and
    # h11; "plain": asyncio and h11 always (e.g. to rule the fast stack out of a problem).
    http_stack: str = "auto"

    def __post_init__(self) -> None:
        _check_files(self)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @property
    def files_kind(self) -> str:
        """The file storage in use: `files`, or the default for the store."""
        return self.files or ("local" if self.sqlite_path is not None else "postgres")

    @property
    def sqlite_path(self) -> Path | None:
        if self.db.startswith("sqlite:///"):
            return Path(self.db.removeprefix("sqlite:///"))
        return None


FILE_KINDS = ("local", "postgres", "s3")


def _check_files(settings: Settings) -> None:
    """Settings of the file storage that cannot work together are refused before anything
    opens, each with what to change."""
    if settings.files not in ("", *FILE_KINDS):
        raise SettingsError(
            f"setting 'files': {settings.files!r} is not one of {', '.join(FILE_KINDS)}"
        )
    kind = settings.files_kind
    if kind == "postgres" and settings.sqlite_path is not None:
        raise SettingsError(
            "setting 'files': postgres files need a PostgreSQL store ('db'); with SQLite use local"
        )
    if kind == "s3" and not settings.s3_bucket:
        raise SettingsError("setting 's3-bucket' is required with files = \"s3\"")
    if kind == "local" and settings.sqlite_path is None and not settings.files_shared:
        raise SettingsError(
            "setting 'files': local files with a PostgreSQL store are seen by this node only; "
            "use files = \"postgres\" or \"s3\", or set files-shared = true when data-dir is "
            "one directory every node mounts"
        )


_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}
_HINTS = typing.get_type_hints(Settings)


def _convert(name: str, value: Any) -> Any:
    hint = _HINTS[name]
    key = name.replace("_", "-")
    if isinstance(value, str):
        value = value.strip()
    if typing.get_origin(hint) is tuple:
        convert: Callable[[Any], Any] | None = _to_tuple
    elif typing.get_origin(hint) in (Mapping, dict) or hint is Mapping[str, Any]:
        convert = _to_table
    else:
        convert = _CONVERTERS.get(hint)
    if convert is None:
        raise SettingsError(f"setting '{key}' cannot be set this way")
    try:
        converted = convert(value)
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"setting '{key}': {exc}") from None
    if name in _SHARES and not 0 < converted <= 1:
        raise SettingsError(f"setting '{key}': must be more than 0 and at most 1")
    if name in _CHOICES and converted not in _CHOICES[name]:
        choices = ", ".join(_CHOICES[name])
        raise SettingsError(f"setting '{key}': {converted!r} is not one of {choices}")
    return converted


_SHARES = frozenset({"max_running_share"})  # fractions: more than 0, at most 1
_CHOICES = {"log_format": ("text", "json"), "log_level": ("debug", "info", "warning", "error"),
            "http_stack": ("auto", "plain")}


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError("expected 1/true/yes or 0/false/no")


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise TypeError("expected an integer")
    number = int(value)
    if number < 0:
        raise ValueError("must not be negative")
    return number


def _to_float(value: Any) -> float:
    real = float(value)
    if not 0 <= real < float("inf"):
        raise ValueError("must be a finite, non-negative number")
    return real


def _to_str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("expected a string")
    return value


def _to_tuple(value: Any) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(str(item).strip() for item in items if str(item).strip())


def _to_table(value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise TypeError("expected a table")
    return types.MappingProxyType(dict(value))


_CONVERTERS: dict[Any, Callable[[Any], Any]] = {
    bool: _to_bool, int: _to_int, float: _to_float, str: _to_str,
}


_TABLES = frozenset({"commands", "schedules"})  # set in the settings file only
TABLE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
Bad = Callable[[str | None, str], SettingsError]  # (the key, the problem) -> the error


def named_table(section: str, name: str, table: Any, keys: frozenset[str]
                ) -> tuple[Mapping[str, Any], Bad]:
    """A `[section.NAME]` table of the settings file (`[commands.NAME]`, `[schedules.NAME]`),
    once its name and keys are ones it may have; with the function that makes its errors,
    each naming the table and the key."""
    def bad(key: str | None, problem: str) -> SettingsError:
        where = f"{section}.{name}" + (f".{key}" if key else "")
        return SettingsError(f"setting '{where}': {problem}")

    if not TABLE_NAME.fullmatch(name):
        raise bad(None, f"a {section.removesuffix('s')} name is 1 to 64 letters, digits, '.', "
                        "'_' or '-'")
    if not isinstance(table, Mapping):
        raise bad(None, "must be a table")
    unknown = sorted(set(table) - keys)
    if unknown:
        raise bad(unknown[0], f"unknown key (known: {', '.join(sorted(keys))})")
    return table, bad


def load_settings(
    config: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    **flags: Any,
) -> Settings:
    """Build the Settings; `flags` with value None are ignored (click passes unset options so)."""
    values: dict[str, Any] = {}
    if config is not None:
        try:
            with open(config, "rb") as fh:
                data = tomllib.load(fh)
        except OSError as exc:
            raise SettingsError(f"cannot read settings file {config}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"settings file {config}: {exc}") from None
        for key, value in data.items():
            name = key.replace("-", "_")
            if name not in _FIELDS:
                raise SettingsError(f"settings file {config}: unknown setting '{key}'")
            values[name] = _convert(name, value)
    env = os.environ if environ is None else environ
    for warning in unknown_variables(env):
        log.warning("%s", warning)
    for name in _FIELDS:
        text = _from_environment(env, name)
        if text is not None:
            values[name] = _convert(name, text)
    for name, value in flags.items():
        if value is None:
            continue
        if name not in _FIELDS:
            raise SettingsError(f"unknown setting '{name}'")
        values[name] = _convert(name, value)
    check_secret_keys(values.get("secret_key", ()))
    return Settings(**values)


# Settings that may be read from a file, THREADSVC_X_Y_FILE: those that hold a secret (the store
# URL carries its password).
SECRET_SETTINGS = frozenset({"db", "secret_key", "metrics_token"})
# The `threads` client's own variables (cli/client.py): known, but no settings.
CLIENT_VARIABLES = frozenset({"THREADSVC_URL", "THREADSVC_USER", "THREADSVC_PASSWORD",
                              "THREADSVC_TOKEN"})


def variable(name: str) -> str:
    """The environment variable of the field `name`."""
    return "THREADSVC_" + name.upper()


def _from_environment(env: Mapping[str, str], name: str) -> str | None:
    """The text the environment gives the setting: its variable, or for a secret setting the
    content of the file its `_FILE` variable names (one of the two, never both)."""
    var = variable(name)
    if name in _TABLES:
        return None  # warned about by unknown_variables
    file_var = var + "_FILE"
    if name not in SECRET_SETTINGS or file_var not in env:
        return env.get(var)
    if var in env:
        raise SettingsError(f"{var} and {file_var} are both set: give the one or the other")
    return _read_secret_file(file_var, env[file_var])


def _read_secret_file(var: str, path: str) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"{var}: cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise SettingsError(f"{var}: {path} is not UTF-8 text") from None
    text = text.strip()  # the file's last newline is no part of the secret
    if not text:
        raise SettingsError(f"{var}: {path} is empty")
    return text


def known_variables() -> frozenset[str]:
    """Every THREADSVC_* variable that is read: the settings', their _FILE forms, the client's."""
    settings = {variable(name) for name in _FIELDS if name not in _TABLES}
    files = {variable(name) + "_FILE" for name in SECRET_SETTINGS}
    return frozenset(settings | files | CLIENT_VARIABLES)


def unknown_variables(env: Mapping[str, str]) -> list[str]:
    """A warning for each THREADSVC_* variable that nothing reads (a typo, most likely: it
    would otherwise be ignored in silence), naming the closest known one. Never its value."""
    known = known_variables()
    warnings = []
    for var in sorted(env):
        if not var.startswith("THREADSVC_") or var in known:
            continue
        table = var.removeprefix("THREADSVC_").lower()
        if table in _TABLES:
            warnings.append(f"{var} is not read: [{table}.NAME] tables are set in the "
                            "settings file only")
            continue
        close = difflib.get_close_matches(var, known, n=1, cutoff=0.75)
        hint = f"; did you mean {close[0]}?" if close else " (see README, Settings)"
        warnings.append(f"unknown variable {var} is ignored{hint}")
    return warnings


MIN_SECRET_KEY = 32  # characters
# The examples' placeholder (deploy/*.example), copied as it is more often than one would hope.
PLACEHOLDER_KEY = "change-me-to-a-long-random-string"


def check_secret_keys(keys: tuple[str, ...]) -> None:
    """Refuse a key from the examples, or one short enough to guess: one signed link or token
    lets anyone try keys offline, as fast as they can compute HMACs. Every key counts, not only
    the one that signs: each is accepted when verifying."""
    for key in keys:
        if key.lower().startswith(PLACEHOLDER_KEY[:len("change-me")]):  # and its variants
            raise SettingsError(
                "setting 'secret-key': the example's placeholder; make a key with "
                "python3 -c 'import secrets; print(secrets.token_urlsafe(48))'"
            )
        if len(key) < MIN_SECRET_KEY:
            raise SettingsError(
                f"setting 'secret-key': a key of {len(key)} characters is too short (at least "
                f"{MIN_SECRET_KEY}); make one with "
                "python3 -c 'import secrets; print(secrets.token_urlsafe(48))'"
            )
