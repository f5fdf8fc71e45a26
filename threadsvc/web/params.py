"""Query parameters of the services, each checked and named when bad."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from threadsvc.errors import BadParameter
from threadsvc.models import ACTIVE, AUDIT_ACTIONS, FINAL, SORTS, Level, Status

_INT = re.compile(r"[0-9]{1,15}")  # epoch milliseconds
_DIGITS = re.compile(r"[0-9]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_HEX = re.compile(r"[0-9a-f]{1,32}")
SEARCH_MAX = 200  # characters of a name or message searched for


def _no_controls(name: str, raw: str) -> str:
    """A control character in any parameter is a 400: no name, job, group, number or date
    holds one, and a NUL would reach the store (PostgreSQL refuses it)."""
    if _CONTROL.search(raw):
        raise BadParameter(name, "may not hold control characters")
    return raw


def text(name: str, raw: str | None) -> str | None:
    """A text filter: None when absent or empty."""
    if raw is None or raw == "":
        return None
    return _no_controls(name, raw)


SEARCH_MAX = 200  # characters of a log search


def search_text(name: str, raw: str | None) -> str | None:
    """Text to search a log for, as given (spaces count): None when absent or empty."""
    found = text(name, raw)
    if found is not None and len(found) > SEARCH_MAX:
        raise BadParameter(name, f"may hold at most {SEARCH_MAX} characters")
    return found


def integer(name: str, raw: str | None, default: int, low: int, high: int) -> int:
    """A whole number from `low` to `high`, both accepted (ASCII digits only)."""
    if raw is None or raw == "":
        return default
    digits = _no_controls(name, raw).strip()
    if not _DIGITS.fullmatch(digits) or len(digits.lstrip("0")) > len(str(high)):
        raise BadParameter(name, f"must be a whole number from {low} to {high}")
    value = int(digits)
    if not low <= value <= high:
        raise BadParameter(name, f"must be from {low} to {high}")
    return value


def statuses(raw: str | None) -> frozenset[Status]:
    if raw is None or _no_controls("status", raw).strip() == "":
        return ACTIVE
    found: set[Status] = set()
    for word in raw.split(","):
        word = word.strip().lower()
        if word == "active":
            found |= ACTIVE
        elif word == "finished":
            found |= FINAL
        elif word == "all":
            found |= set(Status)
        else:
            try:
                found.add(Status(word))
            except ValueError:
                raise BadParameter("status", f"has an unknown status '{word[:40]}'") from None
    return frozenset(found)


def timestamp(name: str, raw: str | None) -> int | None:
    """ISO 8601 (UTC when no offset is given) or epoch milliseconds."""
    if raw is None or _no_controls(name, raw).strip() == "":
        return None
    text = raw.strip()
    if _INT.fullmatch(text):
        return int(text)
    try:
        moment = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise BadParameter(name, "must be an ISO 8601 date-time or epoch milliseconds") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def audit_action(raw: str | None) -> str | None:
    """One of the audit log's actions (models.AUDIT_ACTIONS), or None."""
    found = text("action", raw)
    if found is not None and found not in AUDIT_ACTIONS:
        raise BadParameter("action", "is not an audited action (see docs/api.md#audit)")
    return found


def level(raw: str | None) -> Level:
    if raw is None or _no_controls("level", raw).strip() == "":
        return Level.DEBUG
    try:
        return Level.parse(raw)
    except ValueError:
        raise BadParameter("level", "must be DEBUG, INFO, WARN or ERROR") from None


def id_prefix(raw: str | None) -> str | None:
    """A thread id, whole or its first characters (any case): lowercase hex, at most 32."""
    found = text("id", raw)
    if found is None or found.strip() == "":
        return None
    found = found.strip().lower()
    if not _HEX.fullmatch(found):
        raise BadParameter("id", "must be a thread id or its first characters (0-9, a-f)")
    return found


def search(name: str, raw: str | None) -> str | None:
    """A part of a name or message to look for: None when absent or blank."""
    found = text(name, raw)
    if found is None or found.strip() == "":
        return None
    if len(found) > SEARCH_MAX:
        raise BadParameter(name, f"may be at most {SEARCH_MAX} characters")
    return found.strip()


def sort(raw: str | None) -> str:
    """What a list is ordered by (models.SORTS); `created` by default."""
    found = text("sort", raw)
    if found is None:
        return "created"
    if found not in SORTS:
        raise BadParameter("sort", f"must be one of {', '.join(SORTS)}")
    return found


def descending(raw: str | None) -> bool:
    """`order`: `desc` (the default) or `asc`."""
    found = text("order", raw)
    if found is None or found == "desc":
        return True
    if found != "asc":
        raise BadParameter("order", "must be asc or desc")
    return False
