"""Who may call: passwords (scrypt), API tokens, OAuth clients and their access tokens, lockout.

Tokens and client secrets are random and long, so a SHA-256 of them is enough to store;
passwords are people's, so they get scrypt. Every comparison is constant-time.

Threat model: anyone who can reach the server guesses passwords and client secrets, many at once
and from several nodes' worth of connections. Each attempt is reserved in the store before its
secret is checked, so at most `lockout-attempts` are checked per name in a window, on every node
together; the rest are refused unchecked. Every failure and every lock is logged with the
client's address (never the secret), and written to the audit log (store/audit.py). A credential ends with what it stands for: access tokens
name their client and the user's id (removing either ends them), console sessions the user's
credential version (a password change, disabling or removal ends them), and a disabled user is
no user at all to the store's lookups.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio.to_thread
from itsdangerous import BadSignature, URLSafeTimedSerializer

from threadsvc.errors import AccountLocked, AuthenticationFailed, BadParameter, NotFound
from threadsvc.lookups import SharedLookups
from threadsvc.models import Actor, LoginFailures, Principal, Role, User, now_ms
from threadsvc.settings import Settings
from threadsvc.store.base import Store

if TYPE_CHECKING:  # the server's only: administrative commands do without prometheus_client
    from threadsvc.metrics import Metrics

log = logging.getLogger("threadsvc.auth")

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
API_TOKEN_PREFIX = "tsv_"
CLIENT_ID_PREFIX = "tsc_"
# Seconds a verified password is remembered after its last use. The entry names the user's id
# and credential version, which every request reads anyway: a password changed, a user disabled
# or removed (on any node) ends it at the next request, so the length is only a memory bound.
# It matters beyond scrypt's cost: checking a password reserves an attempt (a store write), and a
# client polling with Basic must not need the store's write lock to read.
VERIFIED_TTL = 600.0
# Seconds a password check waits for the one before it of the same name (see Identity._turn):
# a scrypt and two store statements take far less; a store waiting on a lock takes more.
TURN_WAIT = 2.0
CACHED_USERS = 10_000  # bearer tokens and users whose roles are remembered, at most
CLIENT_KEY = "client:"  # lockout counts of an OAuth client id (no username holds a ':')
LONGEST_NAME = 200  # a longer sign-in name or client id is no one's: refused without a count
READ_SCOPE = "read"  # the one OAuth scope: an access token that may only read (GET, HEAD)
RESERVED_USERNAMES = frozenset({"system"})  # the server's own threads


def check_username(name: str) -> None:
    """The rule for every username the server creates: 1 to 64 visible characters, none of them
    a control character, whitespace or ':' (Basic credentials split at the first ':'), and not
    a reserved name. Raises BadParameter."""
    if not 1 <= len(name) <= 64:
        raise BadParameter("username", "must be 1 to 64 characters")
    if any(not ch.isprintable() or ch.isspace() or ch == ":" for ch in name):
        raise BadParameter("username", "must not contain whitespace, control characters or ':'")
    if name in RESERVED_USERNAMES:
        raise BadParameter("username", f"'{name}' is reserved for the server")


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
    scope: str  # "" (everything the user may do) or READ_SCOPE


class Identity:
    """Authentication against the store; everything here answers a User or raises."""

    def __init__(
        self, store: Store, settings: Settings, secret_keys: tuple[str, ...],
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.metrics = metrics  # the server's, which counts the failures (/metrics)
        self.settings = settings
        # itsdangerous signs with the last key and verifies with all of them.
        self._access = URLSafeTimedSerializer(list(reversed(secret_keys)), salt="access-token")
        self._verified: dict[str, tuple[float, int, int]] = {}  # until, user id, version
        self._pepper = secrets.token_bytes(16)
        self._checks: anyio.CapacityLimiter | None = None  # made in the loop, on first use
        self._turns: dict[str, _Turn] = {}  # names whose password is being checked
        # Polling clients send the same token many times a second: remember what it named
        # (the user, and until when an access token is valid) and the user's roles briefly.
        ttl = settings.auth_cache_seconds
        self._bearers: SharedLookups[str, tuple[User, float, str]] = SharedLookups(
            CACHED_USERS, ttl
        )
        self._roles: SharedLookups[int, dict[int, Role]] = SharedLookups(CACHED_USERS, ttl)

    # -- creating ---------------------------------------------------------------------------
    # (`by`: who makes the change, for the audit log; None writes no entry.)
    async def add_user(
        self, username: str, password: str | None, is_admin: bool, by: Actor | None = None
    ) -> User:
        check_username(username)
        hashed = await anyio.to_thread.run_sync(hash_password, password) if password else None
        return await self.store.create_user(username, hashed, is_admin, by=by)

    async def set_user(
        self, username: str, password: str | None, is_admin: bool, by: Actor | None = None
    ) -> User:
        hashed = await anyio.to_thread.run_sync(hash_password, password) if password else None
        return await self.store.update_user(username, hashed, is_admin, by=by)

    async def set_password(
        self, username: str, password: str | None, by: Actor | None = None
    ) -> None:
        """A new password (None: tokens only); ends the user's console sessions."""
        hashed = await anyio.to_thread.run_sync(hash_password, password) if password else None
        if not await self.store.set_password(username, hashed, by=by):
            raise NotFound(f"no user '{username}'")

    async def new_api_token(self, username: str, by: Actor | None = None) -> str:
        user = await self._user(username)
        token = API_TOKEN_PREFIX + secrets.token_urlsafe(32)
        await self.store.add_api_token(user.id, token_hash(token), by=by)
        return token

    async def new_client(self, username: str, by: Actor | None = None) -> tuple[str, str]:
        user = await self._user(username)
        client_id = CLIENT_ID_PREFIX + secrets.token_hex(12)
        secret = secrets.token_urlsafe(32)
        await self.store.add_oauth_client(user.id, client_id, token_hash(secret), by=by)
        return client_id, secret

    async def _user(self, username: str) -> User:
        found = await self.store.get_user(username)
        if found is None:
            raise NotFound(f"no user '{username}'")
        return found[0]

    # -- checking ---------------------------------------------------------------------------
    async def check_password(self, username: str, password: str, address: str = "") -> User:
        """The user, once the password is right; `address` is the client's, for the log and,
        with `lockout-per-address`, for the count."""
        if "\x00" in username or len(username) > LONGEST_NAME:  # no store holds such a name
            log.warning("failed sign-in for %r from %s: no such name", username[:80], address)
            raise AuthenticationFailed("Wrong username or password")
        counted = address if self.settings.lockout_per_address else ""
        found = await self.store.get_user(username)
        if found is not None and self._recently_verified(username, password, found[0]):
            return await self._remembered(found[0], counted)
        # One check at a time per name on this node: a client that opens many connections at
        # once with the right password has it checked once and the others find it remembered,
        # instead of each taking one of the name's few attempts (and the rest a 429).
        async with self._turn(f"{username}\0{counted}"):
            if found is not None and self._recently_verified(username, password, found[0]):
                return await self._remembered(found[0], counted)
            return await self._check(username, password, address, counted, found)

    async def _remembered(self, user: User, counted: str) -> User:
        """A password verified before (a client polling with Basic): no scrypt and no write
        (unless there are failures to forget, as after any success), but a lock still holds."""
        failures = await self.store.get_login_failures(user.username, counted)
        now = now_ms()
        if failures is not None and failures.locked_until > now:
            raise _locked(f"Too many failed sign-ins for '{user.username}'", failures, now)
        if failures is not None:
            await self.store.clear_login_failures(user.username, counted)
        return user

    @contextlib.asynccontextmanager
    async def _turn(self, name: str) -> AsyncIterator[None]:
        """This name's turn, waited for TURN_WAIT seconds at most: a check that takes longer
        (a store that waits on a lock held elsewhere) does not hold the others in a queue."""
        turn = self._turns.get(name)
        if turn is None:
            turn = self._turns[name] = _Turn()
        turn.waiting += 1
        holding = False
        try:
            with anyio.move_on_after(TURN_WAIT):
                await turn.lock.acquire()
                holding = True
            yield
        finally:
            if holding:
                turn.lock.release()
            turn.waiting -= 1
            if not turn.waiting:
                del self._turns[name]

    async def _check(
        self, username: str, password: str, address: str, counted: str,
        found: tuple[User, str | None] | None,
    ) -> User:
        now = now_ms()
        counts, reserved = await self._reserve(username, counted, now)
        if not reserved:
            log.warning("sign-in refused for %r from %s: locked", username, address)
            raise _locked(f"Too many failed sign-ins for '{username}'", counts, now)
        stored = found[1] if found is not None else None
        ok = await self._verify(password, stored or _DUMMY_HASH)  # as slow for everyone
        if not ok or found is None or stored is None:
            self._log_failure("sign-in", username, address, counts)
            await self._audit_failure(username, address, counts)
            raise AuthenticationFailed("Wrong username or password")
        await self.store.clear_login_failures(username, counted)
        self._remember(username, password, found[0])
        return found[0]

    async def _reserve(self, name: str, address: str, now: int) -> tuple[LoginFailures | None, bool]:
        window = self.settings.lockout_seconds * 1000
        attempts = self.settings.lockout_attempts
        return await self.store.reserve_login_attempt(name, address, now, window, attempts)

    def _log_failure(
        self, what: str, name: str, address: str, counts: LoginFailures | None
    ) -> None:
        attempts = self.settings.lockout_attempts
        seen = counts.failures if counts is not None else 0
        if self.metrics is not None:
            self.metrics.signin_failed()
        log.warning("failed %s for %r from %s (%d of %d)", what, name, address, seen, attempts)
        if counts is not None and counts.locked_until and seen >= attempts:
            log.warning("%s for %r locked for %d s after %d failures (the last from %s)",
                        what, name, self.settings.lockout_seconds, seen, address)

    async def _audit_failure(self, name: str, address: str, counts: LoginFailures | None) -> None:
        """The failure in the audit log, and the lockout when this failure made it (the
        attempts refused while locked are not checked, and not written: one entry a check)."""
        attempts = self.settings.lockout_attempts
        seen = counts.failures if counts is not None else 0
        locked = counts is not None and bool(counts.locked_until) and seen >= attempts
        detail = f"{seen} of {attempts}" + (
            f"; locked for {self.settings.lockout_seconds} s" if locked else "")
        await self.store.record_signin_failure(
            name, Actor(None, address or None), locked=locked, detail=detail
        )

    async def _verify(self, password: str, stored: str) -> bool:
        if self._checks is None:
            self._checks = anyio.CapacityLimiter(PASSWORD_CHECKS)
        return await anyio.to_thread.run_sync(
            verify_password, password, stored, limiter=self._checks
        )

    def _cache_key(self, username: str, password: str) -> str:
        return hmac.new(self._pepper, f"{username}\0{password}".encode(), "sha256").hexdigest()

    def _recently_verified(self, username: str, password: str, user: User) -> bool:
        """Whether this password was right for this very user, at their current credential
        version (a password changed on any node counts from the next request)."""
        key = self._cache_key(username, password)
        entry = self._verified.get(key)
        now = time.monotonic()
        if entry is None or entry[0] <= now or entry[1:] != (user.id, user.credential_version):
            return False
        self._verified[key] = (now + VERIFIED_TTL, *entry[1:])  # kept while it is used
        return True

    def _remember(self, username: str, password: str, user: User) -> None:
        if len(self._verified) > 10_000:
            self._verified.clear()
        expires = time.monotonic() + VERIFIED_TTL
        key = self._cache_key(username, password)
        self._verified[key] = (expires, user.id, user.credential_version)

    async def check_bearer(self, token: str) -> User:
        return (await self.bearer(token))[0]

    async def bearer(self, token: str) -> tuple[User, str]:
        """The user a bearer token names, and its scope ("" or READ_SCOPE)."""
        key = token_hash(token)
        cached = self._bearers.get(key)
        if cached is not None and cached[1] <= time.time():  # an access token that expired
            self._bearers.forget(key)
        user, _, scope = await self._bearers.get_or_look_up(
            key, lambda: self._bearer_user(token, key)
        )
        return user, scope

    async def _bearer_user(self, token: str, key: str) -> tuple[User, float, str]:
        """The user a token names, until when (epoch seconds) the token is valid, its scope."""
        if token.startswith(API_TOKEN_PREFIX):
            user = await self.store.user_for_token(key)
            if user is not None:
                return user, float("inf"), ""
            raise AuthenticationFailed("Unknown or revoked token")
        ttl = self.settings.access_token_ttl
        try:
            data, signed = self._access.loads(token, max_age=ttl, return_timestamp=True)
        except BadSignature:
            raise AuthenticationFailed("Invalid or expired access token") from None
        # An access token names its client and the user's id: removing the client, or the user
        # (even if another of the same name follows), or disabling the user, ends it.
        data = data if isinstance(data, dict) else {}
        client_id, user_id, scope = data.get("c"), data.get("u"), data.get("s", "")
        found = await self.store.get_oauth_client(client_id) if isinstance(client_id, str) else None
        if found is None or type(user_id) is not int or found[0].id != user_id:
            raise AuthenticationFailed("Invalid or expired access token")
        return found[0], signed.timestamp() + ttl, scope if scope == READ_SCOPE else ""

    async def issue_access_token(
        self, client_id: str, secret: str, scope: str = "", address: str = ""
    ) -> AccessToken:
        """An access token for a client's id and secret. Wrong secrets count against the client
        id as wrong passwords count against a name (`lockout-attempts` a window)."""
        if scope not in ("", READ_SCOPE):
            raise BadParameter("scope", f"is not known (invalid_scope): give none, or '{READ_SCOPE}'")
        if "\x00" in client_id or len(client_id) > LONGEST_NAME:  # no client has such an id
            log.warning("failed OAuth token request for %r from %s", client_id[:80], address)
            raise AuthenticationFailed("Unknown client or wrong secret")
        now = now_ms()
        counts, reserved = await self._reserve(CLIENT_KEY + client_id, "", now)
        if not reserved:
            log.warning("OAuth token request for %r from %s refused: locked", client_id, address)
            raise _locked(f"Too many failed attempts for client '{client_id}'", counts, now)
        found = await self.store.get_oauth_client(client_id)
        expected = found[1] if found is not None else token_hash(secrets.token_hex(16))
        if not hmac.compare_digest(token_hash(secret), expected) or found is None:
            self._log_failure("OAuth token request", client_id, address, counts)
            await self._audit_failure(CLIENT_KEY + client_id, address, counts)
            raise AuthenticationFailed("Unknown client or wrong secret")
        await self.store.clear_login_failures(CLIENT_KEY + client_id, "")
        claims: dict[str, object] = {"c": client_id, "u": found[0].id}
        if scope:
            claims["s"] = scope
        return AccessToken(self._access.dumps(claims), self.settings.access_token_ttl, scope)

    async def principal(self, user: User, address: str | None = None) -> Principal:
        """`user` with their roles; `address`: the client's, for the audit log."""
        roles = await self._roles.get_or_look_up(user.id, lambda: self.store.roles_of(user.id))
        return Principal(user=user, roles=roles, address=address)

    async def recheck(self, who: Principal) -> Principal | None:
        """`who` as the store has them now, roles read afresh (no cache): for a long-poll or an
        event stream that outlives its request's check. None when the user is gone or disabled
        (the store's lookups treat a disabled user as absent), or the name now belongs to
        another user (a new id)."""
        user = await self.user_now(who.user.id, who.username)
        if user is None:
            self._roles.forget(who.user.id)
            return None
        roles = await self.store.roles_of(user.id)
        self._roles.put(user.id, roles)  # what was read is remembered, as principal() would
        return Principal(user=user, roles=roles)

    async def user_now(self, user_id: int, username: str) -> User | None:
        """The user as the store has them now; None when gone or disabled, or when the name
        now belongs to another user (a new id)."""
        found = await self.store.get_user(username)
        if found is None or found[0].id != user_id:
            return None
        return found[0]


class _Turn:
    """Password checks of one name on this node, one at a time."""

    def __init__(self) -> None:
        self.lock = anyio.Lock()
        self.waiting = 0


def _locked(message: str, counts: LoginFailures | None, now: int) -> AccountLocked:
    until = counts.locked_until if counts is not None else 0
    return AccountLocked(f"{message}; try later", max(1, (until - now + 999) // 1000))
