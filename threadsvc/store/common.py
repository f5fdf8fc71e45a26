"""What both stores need alike."""

from __future__ import annotations

from typing import Any

from threadsvc.models import Thread


def state_args(thread: Thread, node: str, now: int) -> dict[str, Any]:
    result = thread.result
    return {
        "id": thread.id,
        "node": node,
        "status": thread.status.value,
        "message": thread.message,
        "progress_current": thread.progress_current,
        "progress_total": thread.progress_total,
        "warnings": thread.warnings,
        "errors": thread.errors,
        "ended": thread.ended,
        "heartbeat": now,
        "version": thread.version,
        "result_file": result.file if result else None,
        "result_type": result.media_type if result else None,
        "result_size": result.size if result else None,
        "result_name": result.name if result else None,
        "result_deletion": result.deletion if result else None,
    }
