"""Who may call: passwords (scrypt), API tokens, OAuth clients and their access tokens, lockout.

Tokens and client secrets are random and long, so a SHA-256 of them is enough to store;
passwords are people's, so they get scrypt. Every comparison is constant-time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass

import anyio.to_thread
from cachetools import TTLCache
from itsdangerous import BadSignature, URLSafeTimedSerializer

from threadsvc.errors import AccountLocked, AuthenticationFailed, NotFound
from threadsvc.models import Principal, Role, User, now_ms
from threadsvc.settings import Settings
from threadsvc.store.base import Store

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
API_TOKEN_PREFIX = "tsv_"
CLIENT_ID_PREFIX = "tsc_"
VERIFIED_TTL = 10.0  # seconds a verified password is remembered (a changed one is honoured after)
CACHED_USERS = 10_000  # bearer tokens and users whose roles are remembered, at most


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, maxmem=64 * 1024 * 1024
    )
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=64 * 1024 * 1024,
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


_DUMMY_HASH = hash_password(secrets.token_hex(16))  # so unknown users take as long as known


# scrypt takes tens of milliseconds and 16 MiB: at most this many at once, in threads of their
# own, so that a burst of sign-ins (say, Basic with made-up names, each checked against the
# dummy hash) queues in bounded memory and leaves anyio's threads to jobs and files.
PASSWORD_CHECKS = max(2, os.cpu_count() or 1)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class AccessToken:
    access_token: str
    expires_in: int


class Identity:
    """Authentication against the store; everything here answers a User or raises."""

    def __init__(self, store: Store, settings: Settings, secret_keys: tuple[str, ...]) -> None:
        self.store = store
        self.settings = settings
        # itsdangerous signs with the last key and verifies with all of them.
        self._access = URLSafeTimedSerializer(list(reversed(secret_keys)), salt="access-token")
        self._verified: dict[str, tuple[float, int]] = {}
        self._pepper = secrets.token_bytes(16)
        self._checks: anyio.CapacityLimiter | None = None  # made in the loop, on first use
        # Polling clients send the same token many times a second: remember what it named
        # (the user, and until when an access token is valid) and the user's roles briefly.
        ttl = settings.auth_cache_seconds
        self._bearers: TTLCache[str, tuple[User, float]] | None = (
            TTLCache(CACHED_USERS, ttl) if ttl > 0 else None
        )
        self._roles: TTLCache[int, dict[int, Role]] | None = (
            TTLCache(CACHED_USERS, ttl) if ttl > 0 else None
        )

    # -- creating ---------------------------------------------------------------------------
    async def add_user(self, username: str, password: str | None, is_admin: bool) -> User:
        hashed = await anyio.to_thread.run_sync(hash_password, password) if password else None
        return await self.store.create_user(username, hashed, is_admin)

    async def set_user(self, username: str, password: str | None, is_admin: bool) -> User:
        hashed = await anyio.to_thread.run_sync(hash_password, password) if password else None
        return await self.store.update_user(username, hashed, is_admin)

    async def new_api_token(self, username: str) -> str:
        user = await self._user(username)
        token = API_TOKEN_PREFIX + secrets.token_urlsafe(32)
        await self.store.add_api_token(user.id, token_hash(token))
        return token

    async def new_client(self, username: str) -> tuple[str, str]:
        user = await self._user(username)
        client_id = CLIENT_ID_PREFIX + secrets.token_hex(12)
        secret = secrets.token_urlsafe(32)
        await self.store.add_oauth_client(user.id, client_id, token_hash(secret))
        return client_id, secret

    async def _user(self, username: str) -> User:
        found = await self.store.get_user(username)
        if found is None:
            raise NotFound(f"no user '{username}'")
        return found[0]

    # -- checking ---------------------------------------------------------------------------
    async def check_password(self, username: str, password: str) -> User:
        now = now_ms()
        failures = await self.store.get_login_failures(username)
        if failures is not None and failures.locked_until > now:
            retry = max(1, (failures.locked_until - now + 999) // 1000)
            raise AccountLocked(f"Too many failed sign-ins for '{username}'; try later", retry)
        found = await self.store.get_user(username)
        stored = found[1] if found is not None else None
        if found is not None and stored is not None:
            ok = self._recently_verified(username, password, found[0]) or await self._verify(
                password, stored
            )
        else:
            ok = await self._verify(password, _DUMMY_HASH)  # as slow as for a known user
            ok = False
        if not ok or found is None:
            window = self.settings.lockout_seconds * 1000
            await self.store.record_login_failure(
                username, now, window, self.settings.lockout_attempts
            )
            raise AuthenticationFailed("Wrong username or password")
        if failures is not None:
            await self.store.clear_login_failures(username)
        self._remember(username, password, found[0])
        return found[0]

    async def _verify(self, password: str, stored: str) -> bool:
        if self._checks is None:
            self._checks = anyio.CapacityLimiter(PASSWORD_CHECKS)
        return await anyio.to_thread.run_sync(
            verify_password, password, stored, limiter=self._checks
        )

    def _cache_key(self, username: str, password: str) -> str:
        return hmac.new(self._pepper, f"{username}\0{password}".encode(), "sha256").hexdigest()

    def _recently_verified(self, username: str, password: str, user: User) -> bool:
        entry = self._verified.get(self._cache_key(username, password))
        return entry is not None and entry[0] > time.monotonic() and entry[1] == user.id

    def _remember(self, username: str, password: str, user: User) -> None:
        if len(self._verified) > 10_000:
            self._verified.clear()
        expires = time.monotonic() + VERIFIED_TTL
        self._verified[self._cache_key(username, password)] = (expires, user.id)

    async def check_bearer(self, token: str) -> User:
        key = token_hash(token)
        cached = self._bearers.get(key) if self._bearers is not None else None
        if cached is not None and cached[1] > time.time():
            return cached[0]
        user, valid_until = await self._bearer_user(token, key)
        if self._bearers is not None:
            self._bearers[key] = (user, valid_until)
        return user

    async def _bearer_user(self, token: str, key: str) -> tuple[User, float]:
        """The user a token names, and until when (epoch seconds) the token is valid."""
        if token.startswith(API_TOKEN_PREFIX):
            user = await self.store.user_for_token(key)
            if user is not None:
                return user, float("inf")
            raise AuthenticationFailed("Unknown or revoked token")
        ttl = self.settings.access_token_ttl
        try:
            data, signed = self._access.loads(token, max_age=ttl, return_timestamp=True)
        except BadSignature:
            raise AuthenticationFailed("Invalid or expired access token") from None
        username = data.get("u") if isinstance(data, dict) else None
        found = await self.store.get_user(username) if isinstance(username, str) else None
        if found is None:
            raise AuthenticationFailed("Invalid or expired access token")
        return found[0], signed.timestamp() + ttl

    async def issue_access_token(self, client_id: str, secret: str) -> AccessToken:
        if "\x00" in client_id:  # no store can hold it, so no client has it
            raise AuthenticationFailed("Unknown client or wrong secret")
        found = await self.store.get_oauth_client(client_id)
        expected = found[1] if found is not None else token_hash(secrets.token_hex(16))
        if not hmac.compare_digest(token_hash(secret), expected) or found is None:
            raise AuthenticationFailed("Unknown client or wrong secret")
        token = self._access.dumps({"u": found[0].username})
        return AccessToken(token, self.settings.access_token_ttl)

    async def principal(self, user: User) -> Principal:
        roles = self._roles.get(user.id) if self._roles is not None else None
        if roles is None:
            roles = await self.store.roles_of(user.id)
            if self._roles is not None:
                self._roles[user.id] = roles
        return Principal(user=user, roles=roles)

    async def recheck(self, who: Principal) -> Principal | None:
        """`who` as the store has them now, roles read afresh (no cache): for a long-poll or an
        event stream that outlives its request's check. None when the user is gone, or the
        name now belongs to another user (a new id)."""
        found = await self.store.get_user(who.username)
        if found is None or found[0].id != who.user.id:
            if self._roles is not None:
                self._roles.pop(who.user.id, None)
            return None
        roles = await self.store.roles_of(found[0].id)
        if self._roles is not None:  # what was read is remembered, as principal() would
            self._roles[found[0].id] = roles
        return Principal(user=found[0], roles=roles)
