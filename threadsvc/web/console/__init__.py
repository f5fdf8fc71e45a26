"""The web console at /ps/ui: HTML pages on the same Service calls as the API (SPEC §2).

Jinja2 templates render the models; a little plain JavaScript follows a thread live through
the Server-Sent Events of the services (SPEC §7), and every page works without it.
"""

from __future__ import annotations

from threadsvc.web.console.session import Console, ConsoleSessions

__all__ = ["Console", "ConsoleSessions"]
