"""Named SQL queries, read once: those of `sql/*.sql`, written once for both dialects, then the
dialect's own (`sql/{dialect}/overrides.sql`), which replace or add to them."""

from __future__ import annotations

import functools
import re
from importlib import resources
from pathlib import Path

_NAME = re.compile(r"^--\s*name:\s*(\S+)\s*$", re.MULTILINE)
# A `:name` parameter (not a `::type` cast), and how each dialect's driver writes it.
_PARAMETER = re.compile(r"(?<![:\w]):(\w+)")
_STYLE = {"sqlite": r":\1", "postgres": r"%(\1)s"}


def sql_dir(dialect: str) -> Path:
    return Path(str(resources.files("threadsvc.store") / "sql" / dialect))


def parse_queries(text: str) -> dict[str, str]:
    parts = _NAME.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        lines = [line for line in body.strip().splitlines() if not line.lstrip().startswith("--")]
        queries[name] = "\n".join(lines).strip().rstrip(";")
    return queries


@functools.cache
def load_queries(dialect: str) -> dict[str, str]:
    """Every named query of the dialect, its parameters as its driver writes them."""
    shared = _read_all(sql_dir(dialect).parent, "shared")
    own = _read_all(sql_dir(dialect), dialect)
    return {
        name: _PARAMETER.sub(_STYLE[dialect], sql) for name, sql in {**shared, **own}.items()
    }


def _read_all(directory: Path, what: str) -> dict[str, str]:
    """The named queries of every `.sql` file of `directory` but `schema.sql`."""
    queries: dict[str, str] = {}
    for path in sorted(directory.glob("*.sql")):
        if path.name != "schema.sql":
            for name, sql in parse_queries(path.read_text("utf-8")).items():
                if name in queries:
                    raise ValueError(f"query {name} is defined twice in {what}")
                queries[name] = sql
    return queries


def migrations(dialect: str) -> list[tuple[int, str]]:
    """(version, script) of every numbered migration, in order."""
    found = []
    for path in sorted((sql_dir(dialect) / "migrations").glob("[0-9]*.sql")):
        found.append((int(path.name.split("_", 1)[0]), path.read_text("utf-8")))
    return found


def schema(dialect: str) -> str:
    return (sql_dir(dialect) / "schema.sql").read_text("utf-8")
