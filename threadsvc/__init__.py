"""threadsvc: long-running, group-scoped jobs behind PageSeeder-compatible thread services."""

from __future__ import annotations

from threadsvc.models import Level, Role, Scope, Status
from threadsvc.runner.context import Context
from threadsvc.runner.registry import job
from threadsvc.runner.retrying import Retry

__version__ = "0.1.0"
__all__ = ["Context", "Level", "Retry", "Role", "Scope", "Status", "__version__", "job"]
