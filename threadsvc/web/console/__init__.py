"""The web console at /ps/ui: HTML pages on the same Service calls as the API (docs/api.md#where-things-are).

Jinja2 templates render the models; a little plain JavaScript follows a thread live through
the Server-Sent Events of the services (docs/api.md#events), and every page works without it.
"""

from __future__ import annotations

from threadsvc.web.console.session import Console, ConsoleSessions

__all__ = ["Console", "ConsoleSessions"]
