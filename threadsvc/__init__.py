"""threadsvc: long-running, group-scoped jobs behind PageSeeder-compatible thread services."""

from __future__ import annotations

from threadsvc.models import Level, Role, Scope, Status
from threadsvc.runner.context import Context
from threadsvc.runner.registry import job

__version__ = "0.1.0"
__all__ = ["Context", "Level", "Role", "Scope", "Status", "__version__", "job"]
