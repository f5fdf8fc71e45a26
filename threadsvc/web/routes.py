"""The route table, and nothing else."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from threadsvc.web import api, controls, webhooks
from threadsvc.web.console import routes as console

Handler = Callable[[Request], Awaitable[Response]]

SERVICE = "/ps/service"
CONSOLE = "/ps/ui"


def by_method(path: str, handlers: dict[str, Handler]) -> Route:
    """One route for a path whatever the method, so a 405 names every allowed method."""

    async def endpoint(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        return await handlers[method](request)

    return Route(path, endpoint, methods=list(handlers), name=path)


def _thread_routes(base: str) -> list[BaseRoute]:
    return [
        by_method(f"{base}/threads", {"GET": api.list_threads, "POST": api.start_thread}),
        by_method(f"{base}/threads/{{id}}", {"GET": api.get_thread, "DELETE": api.delete}),
        Route(f"{base}/threads/{{id}}/logs", api.logs, methods=["GET"]),
        Route(f"{base}/threads/{{id}}/cancel", api.cancel, methods=["POST"]),
        Route(f"{base}/threads/{{id}}/result", api.result, methods=["GET"]),
        Route(f"{base}/threads/{{id}}/events", api.events, methods=["GET"]),
    ]


def routes() -> list[BaseRoute]:
    """The services (each one described in openapi.json). The router tries them in order, so
    what clients poll comes first (no two of these paths match the same request)."""
    return [
        Route(f"{SERVICE}/groups/{{group}}/threads/{{id}}/progress", api.progress, methods=["GET"]),
        Route(f"{SERVICE}/threads/{{id}}/progress", api.progress, methods=["GET"]),
        *_thread_routes(SERVICE),
        *_thread_routes(SERVICE + "/groups/{group}"),
        *_webhook_routes(SERVICE),
        *_webhook_routes(SERVICE + "/groups/{group}"),
        Route(SERVICE + "/audit", api.audit, methods=["GET"]),
        Route(SERVICE + "/jobs", api.list_jobs, methods=["GET"]),
        Route(SERVICE + "/groups/{group}/jobs", api.list_jobs, methods=["GET"]),
        *_control_routes(),
        Route(SERVICE + "/openapi.json", api.openapi, methods=["GET"]),
        Route(SERVICE + "/results/{token}", api.download, methods=["GET"]),
        Route("/ps/oauth/token", api.oauth_token, methods=["POST"]),
        Route("/health", api.health, methods=["GET"]),
        Route("/ready", api.ready, methods=["GET"]),
        Route("/metrics", api.metrics, methods=["GET"]),
    ]


def console_routes() -> list[BaseRoute]:
    """The web console: HTML pages for people, not services (so not in openapi.json)."""
    return [
        Route(CONSOLE, _to_console, methods=["GET"]),
        Mount(CONSOLE, app=console.app()),
    ]


async def _to_console(request: Request) -> Response:
    return RedirectResponse(CONSOLE + "/groups", status_code=303)


def _webhook_routes(base: str) -> list[BaseRoute]:
    return [
        by_method(
            f"{base}/webhooks", {"GET": webhooks.list_webhooks, "POST": webhooks.register}
        ),
        by_method(
            f"{base}/webhooks/{{id}}",
            {"GET": webhooks.get_webhook, "DELETE": webhooks.delete_webhook},
        ),
    ]


def _control_routes() -> list[BaseRoute]:
    """The administrators' controls (web/controls.py)."""
    return [
        Route(SERVICE + "/nodes", controls.list_nodes, methods=["GET"]),
        Route(SERVICE + "/nodes/{node}/max-running", controls.max_running, methods=["POST"]),
        Route(SERVICE + "/nodes/{node}/drain", controls.drain, methods=["POST"]),
        Route(SERVICE + "/nodes/{node}/undrain", controls.undrain, methods=["POST"]),
        Route(SERVICE + "/paused-jobs", controls.paused_jobs, methods=["GET"]),
        Route(SERVICE + "/jobs/{job}/pause", controls.pause, methods=["POST"]),
        Route(SERVICE + "/jobs/{job}/resume", controls.resume, methods=["POST"]),
    ]
