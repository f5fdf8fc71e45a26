"""Registering, listing and deleting webhooks: who may, and what a webhook may be."""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

from threadsvc.delivery.address import AddressRefused, parse_url, resolve_public
from threadsvc.errors import BadParameter, Forbidden, WebhookNotFound
from threadsvc.models import (
    SERVER_GROUP_ID,
    Delivery,
    Principal,
    Role,
    Webhook,
    WebhookEvents,
    now_ms,
)
from threadsvc.service import Service
from threadsvc.settings import Settings
from threadsvc.store.base import Store

RECENT = 20  # deliveries shown with a webhook
MIN_SECRET = 16  # characters: a short secret is guessed offline from one signed delivery
MAX_SECRET = 1000


class WebhookService:
    """Group webhooks need a manager of the group; server webhooks (group None) an administrator.

    The caller's right is checked first (403), then the parameters (400), then the webhook,
    which is reachable only under its own group (404 elsewhere)."""

    def __init__(self, store: Store, service: Service, settings: Settings) -> None:
        self.store = store
        self.service = service
        self.settings = settings

    async def authorize(self, who: Principal, group_ref: str | None) -> int:
        """The group id (-1: server) whose webhooks `who` may manage; else Forbidden."""
        if group_ref is None:
            if not who.is_admin:
                raise Forbidden("Only administrators may manage server webhooks")
            return SERVER_GROUP_ID
        group = await self.service.group(group_ref)
        if not who.has_role(group.id, Role.MANAGER):
            raise Forbidden(f"Webhooks of group '{group.name}' need the role manager")
        return group.id

    async def _webhook(self, group_id: int, ref: str) -> Webhook:
        webhook = None
        if ref.isascii() and ref.isdigit() and len(ref) < 19:
            webhook = await self.store.get_webhook(int(ref))
        if webhook is None or webhook.group_id != group_id:
            raise WebhookNotFound(f"No webhook '{ref[:64]}'")
        return webhook

    async def register(
        self, who: Principal, group_ref: str | None, fields: Mapping[str, str]
    ) -> Webhook:
        group_id = await self.authorize(who, group_ref)
        for name in fields:
            if name not in ("url", "secret", "events"):
                raise BadParameter(name[:64], "is not a webhook field (url, secret, events)")
        url = fields.get("url", "").strip()
        parse_url(url)
        secret = fields.get("secret", "")
        if not secret.strip():
            raise BadParameter("secret", "is required")
        if len(secret) < MIN_SECRET:  # webhooks registered before this rule keep theirs
            raise BadParameter("secret", f"must be at least {MIN_SECRET} characters")
        if len(secret) > MAX_SECRET:
            raise BadParameter("secret", f"is longer than {MAX_SECRET} characters")
        if "\x00" in secret:
            raise BadParameter("secret", "may not hold a NUL character")
        events = fields.get("events", "").strip() or "final"
        if events not in ("final", "all"):
            raise BadParameter("events", "must be final or all")
        await self.check_address(url)
        return await self.store.create_webhook(
            group_id, url, secret, cast(WebhookEvents, events), who.username, now_ms(),
            most_in_group=self.settings.max_webhooks_per_group,
            most_in_all=self.settings.max_webhooks, by=who.actor,
        )

    async def check_address(self, url: str) -> None:
        if not self.settings.webhook_allow_private:
            try:
                await resolve_public(parse_url(url))
            except AddressRefused as exc:
                raise BadParameter("url", f"is refused: {exc}") from None

    async def list_webhooks(self, who: Principal, group_ref: str | None) -> list[Webhook]:
        return await self.store.list_webhooks(await self.authorize(who, group_ref))

    async def get_webhook(
        self, who: Principal, group_ref: str | None, ref: str
    ) -> tuple[Webhook, list[Delivery]]:
        webhook = await self._webhook(await self.authorize(who, group_ref), ref)
        return webhook, await self.store.recent_deliveries(webhook.id, RECENT)

    async def delete(self, who: Principal, group_ref: str | None, ref: str) -> None:
        webhook = await self._webhook(await self.authorize(who, group_ref), ref)
        if not await self.store.delete_webhook(webhook.id, by=who.actor):
            raise WebhookNotFound(f"No webhook '{ref[:64]}'")
