"""The console's route table (mounted at /ps/ui), and nothing else."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route, Router
from starlette.staticfiles import StaticFiles

from threadsvc.web.console import admin, bulk, forms, live, views
from threadsvc.web.console.pages import HOME, not_found, see_other


async def home(request: Request) -> Response:
    return see_other(HOME)


def _thread_routes(base: str) -> list[BaseRoute]:
    pages = [  # under a group, and at server level
        ("/threads/live", "GET", live.list_events),  # before /threads/{id}
        ("/threads/bulk", "POST", bulk.bulk),
        ("/threads/{id}", "GET", views.thread_page),
        ("/threads/{id}/log.txt", "GET", views.log_text),
        ("/threads/{id}/cancel", "POST", views.cancel),
        ("/start", "GET", forms.start_form),
        ("/start", "POST", forms.start),
    ]
    return [Route(base + path, endpoint, methods=[method]) for path, method, endpoint in pages]


def routes() -> list[BaseRoute]:
    return [
        Route("/", home, methods=["GET"]),
        Route("/sign-in", forms.sign_in_form, methods=["GET"]),
        Route("/sign-in", forms.sign_in, methods=["POST"]),
        Route("/sign-out", forms.sign_out_form, methods=["GET"]),
        Route("/sign-out", forms.sign_out, methods=["POST"]),
        Route("/groups", views.groups, methods=["GET"]),
        Route("/groups/open", views.open_group, methods=["GET"]),
        Route("/groups/{group}/threads", views.group_threads, methods=["GET"]),
        *_thread_routes("/groups/{group}"),
        Route("/threads", views.all_threads, methods=["GET"]),
        *_thread_routes(""),
        Route("/queue", admin.queue, methods=["GET"]),
        Route("/nodes", admin.nodes, methods=["GET"]),
        Mount("/static", StaticFiles(packages=[("threadsvc.web.console", "static")])),
    ]


def app() -> Router:
    """The console as one ASGI app: its pages, and an HTML 404 for any other path."""
    return Router(routes=routes(), default=not_found)
