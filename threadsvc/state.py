"""The application state: every part the web layer (services and console) reads, built once by
`create_app` and held by the application as `app.state.threadsvc`, the one attribute it has."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request
from starlette.types import ASGIApp

from threadsvc.changes import Changes
from threadsvc.delivery.service import WebhookService
from threadsvc.identity import Identity
from threadsvc.metrics import Metrics
from threadsvc.runner.clock import ClockCheck
from threadsvc.runner.runner import Runner
from threadsvc.runner.supervisor import Supervisor
from threadsvc.service import Service
from threadsvc.settings import Settings
from threadsvc.web.console.session import Console
from threadsvc.web.renderings import Renderings
from threadsvc.web.waiting import Rechecks, StreamQuota


@dataclass(frozen=True)
class AppState:
    settings: Settings
    identity: Identity
    service: Service
    webhooks: WebhookService
    runner: Runner
    changes: Changes
    supervisor: Supervisor  # the side tasks, for /ready
    clock: ClockCheck  # this node's clock against the database's, for /ready
    console: Console  # the console's session and CSRF keys
    streams: StreamQuota
    renderings: Renderings
    rechecks: Rechecks
    openapi: bytes  # /ps/service/openapi.json, made from the registered jobs (web/openapi.py)
    metrics: Metrics  # this node's figures, for /metrics


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.threadsvc
    return state


def state_of(app: ASGIApp) -> AppState | None:
    """The state once the lifespan has built it; None before (or for another application)."""
    state = getattr(getattr(app, "state", None), "threadsvc", None)
    return state if isinstance(state, AppState) else None
