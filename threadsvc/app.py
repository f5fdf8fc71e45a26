"""create_app(settings): everything is wired here; the lifespan opens the store and runs the runner."""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware

from threadsvc.errors import ThreadsvcError
from threadsvc.identity import Identity
from threadsvc.runner.registry import Registry
from threadsvc.runner.runner import Runner
from threadsvc.service import Service
from threadsvc.settings import Settings
from threadsvc.store import make_store
from threadsvc.store.base import Store
from threadsvc.web import errors
from threadsvc.web.api import AppState
from threadsvc.web.middleware import ApiAlias, BodyLimit
from threadsvc.web.routes import routes

log = logging.getLogger("threadsvc")


async def secret_keys(settings: Settings, store: Store) -> tuple[str, ...]:
    """The configured keys, or one generated once and kept in the store (shared by nodes)."""
    if settings.secret_key:
        return settings.secret_key
    return (await store.get_or_put_setting("secret-key", secrets.token_urlsafe(48)),)


def create_app(settings: Settings) -> Starlette:
    registry = Registry.load(settings.jobs)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        store = make_store(settings)
        await store.open()
        try:
            identity = Identity(store, settings, await secret_keys(settings, store))
            runner = Runner(store, registry, settings)
            service = Service(store, registry, runner)
            app.state.threadsvc = AppState(settings, store, identity, runner, service)
            await runner.start()
            log.info("threadsvc node %s serving", runner.node)
            try:
                yield
            finally:
                await runner.stop()
        finally:
            await store.close()

    return Starlette(
        routes=routes(),
        middleware=[Middleware(ApiAlias), Middleware(BodyLimit, limit=settings.max_upload)],
        exception_handlers={
            ThreadsvcError: errors.threadsvc_error,
            HTTPException: errors.http_error,
            Exception: errors.internal_error,
        },
        lifespan=lifespan,
    )
