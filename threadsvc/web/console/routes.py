"""The console's route table (mounted at /ps/ui), and nothing else."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route, Router
from starlette.staticfiles import StaticFiles

from threadsvc.web.console import (
    admin,
    auditlog,
    bulk,
    dashboard,
    find,
    forms,
    hooks,
    live,
    logview,
    people,
    views,
)
from threadsvc.web.console.pages import HOME, not_found, see_other


async def home(request: Request) -> Response:
    return see_other(HOME)


def _thread_routes(base: str) -> list[BaseRoute]:
    pages = [  # under a group, and at server level
        ("/threads/live", "GET", live.list_events),  # before /threads/{id}
        ("/threads/bulk", "POST", bulk.bulk),
        ("/threads/{id}", "GET", views.thread_page),
        ("/threads/{id}/log.txt", "GET", logview.log_text),
        ("/threads/{id}/log.json", "GET", logview.log_json),
        ("/threads/{id}/log/problem", "GET", logview.next_problem),
        ("/threads/{id}/cancel", "POST", views.cancel),
        ("/start", "GET", forms.start_form),
        ("/start", "POST", forms.start),
    ]
    return [Route(base + path, endpoint, methods=[method]) for path, method, endpoint in pages]


def _webhook_routes(base: str) -> list[BaseRoute]:
    return [
        Route(base, hooks.webhooks, methods=["GET"]),
        Route(base, hooks.add, methods=["POST"]),
        Route(base + "/{id}", hooks.webhook, methods=["GET"]),
        Route(base + "/{id}/delete", hooks.delete_confirm, methods=["GET"]),
        Route(base + "/{id}/delete", hooks.delete, methods=["POST"]),
    ]


def _admin_routes() -> list[BaseRoute]:
    """Administration: people.py, hooks.py and auditlog.py (rules in threadsvc.management)."""
    return [
        Route("/admin", people.index, methods=["GET"]),
        Route("/admin/users", people.users, methods=["GET"]),
        Route("/admin/users", people.add_user, methods=["POST"]),
        Route("/admin/user", people.user, methods=["GET"]),
        Route("/admin/user/{action}", people.user_confirm, methods=["GET"]),
        Route("/admin/user/{action}", people.user_change, methods=["POST"]),
        Route("/admin/groups", people.groups, methods=["GET"]),
        Route("/admin/groups", people.add_group, methods=["POST"]),
        Route("/admin/groups/{group}", people.group, methods=["GET"]),
        Route("/admin/groups/{group}/members", people.set_member, methods=["POST"]),
        Route("/admin/groups/{group}/members/remove", people.remove_member_confirm,
              methods=["GET"]),
        Route("/admin/groups/{group}/members/remove", people.remove_member, methods=["POST"]),
        *_webhook_routes("/admin/groups/{group}/webhooks"),
        *_webhook_routes("/admin/webhooks"),
        Route("/admin/clients", people.clients, methods=["GET"]),
        Route("/admin/clients/remove", people.remove_client_confirm, methods=["GET"]),
        Route("/admin/clients/remove", people.remove_client, methods=["POST"]),
        Route("/admin/audit", auditlog.audit, methods=["GET"]),
    ]


def routes() -> list[BaseRoute]:
    return [
        Route("/", home, methods=["GET"]),
        Route("/sign-in", forms.sign_in_form, methods=["GET"]),
        Route("/sign-in", forms.sign_in, methods=["POST"]),
        Route("/sign-out", forms.sign_out_form, methods=["GET"]),
        Route("/sign-out", forms.sign_out, methods=["POST"]),
        Route("/groups", views.groups, methods=["GET"]),
        Route("/groups/open", views.open_group, methods=["GET"]),
        Route("/find", find.find_thread, methods=["GET"]),
        Route("/groups/{group}/threads", views.group_threads, methods=["GET"]),
        *_thread_routes("/groups/{group}"),
        Route("/threads", views.all_threads, methods=["GET"]),
        *_thread_routes(""),
        Route("/queue", admin.queue, methods=["GET"]),
        Route("/nodes", admin.nodes, methods=["GET"]),
        *_admin_routes(),
        Route("/dashboard", dashboard.dashboard, methods=["GET"]),
        *[Route(f"/dashboard/{name}", endpoint, methods=["POST"]) for name, endpoint in (
            ("pause", dashboard.pause), ("resume", dashboard.resume),
            ("max-running", dashboard.max_running), ("drain", dashboard.drain),
            ("undrain", dashboard.undrain))],
        Mount("/static", StaticFiles(packages=[("threadsvc.web.console", "static")])),
    ]


def app() -> Router:
    """The console as one ASGI app: its pages, and an HTML 404 for any other path."""
    return Router(routes=routes(), default=not_found)
