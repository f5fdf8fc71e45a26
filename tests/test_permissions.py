"""The permission matrix of the thread services (docs/api.md#services, #errors), against a real server.

Every route, server level and group level, for every kind of caller: anonymous, a wrong
password, a non-member, each role of `dev`, the manager of another group, the thread's owner
and the administrator. Each case asserts the exact status and, for errors, the error document
(`<error id>` with `<request>` = the request path and a non-empty `<message>`).

Shared threads (module-scoped) are long sleeps that stay running for the whole module; cases
that change a thread (a cancel or a delete that is allowed) start a fresh one.
"""

from __future__ import annotations

import itertools
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.support import USERS, Server, password, wait_for


@pytest.fixture(scope="module")
def world(in_process_world: tuple[Server, dict[str, str]]) -> tuple[Server, dict[str, str]]:
    """This module asks only what the app answers: served in this process."""
    return in_process_world

XML = "application/xml;charset=utf-8"
SERVICE = "/ps/service"
THREAD_ID = re.compile(r"[0-9a-f]{32}")
UNKNOWN_ID = "0123456789abcdef0123456789abcdef"
FINAL = {"completed", "failed", "cancelled"}

# -- callers ------------------------------------------------------------------------------------
# "owner" is the user who started the shared dev threads: `contributor`. The owner has no more
# rights than the role gives at group level; at server level it may read its own thread.
OWNER = "contributor"
CALLERS = (
    "anonymous",
    "badpass",
    "outsider",
    "reviewer",
    "contributor",
    "manager",
    "approver",
    "othermgr",
    "owner",
    "admin",
)
UNAUTHENTICATED = {"anonymous", "badpass"}
RANK = {"reviewer": 1, "contributor": 2, "manager": 3, "approver": 4}
MINIMUM = {  # docs/api.md#services, group level
    "list": "contributor",
    "start": "contributor",  # sleep's own minimum
    "get": "reviewer",
    "progress": "reviewer",
    "logs": "contributor",
    "cancel": "contributor",
    "delete": "manager",
}
ROUTES = tuple(MINIMUM)
THREAD_ROUTES = ("get", "progress", "logs", "cancel", "delete")

# Wrong passwords: a real user with a wrong password, each real user at most twice, so no
# account comes near the lockout (5 failures in 900 s); then unknown usernames, each used once.
_BAD_PASSWORD_FAILURES: dict[str, int] = {}
_GHOSTS = itertools.count(1)


def bad_password_user() -> str:
    for user in USERS:
        if _BAD_PASSWORD_FAILURES.get(user, 0) < 2:
            _BAD_PASSWORD_FAILURES[user] = _BAD_PASSWORD_FAILURES.get(user, 0) + 1
            return user
    return f"ghost{next(_GHOSTS)}"


def user_of(caller: str) -> str | None:
    if caller in UNAUTHENTICATED:
        return None
    return OWNER if caller == "owner" else caller


def client(server: Server, caller: str) -> httpx.Client:
    if caller == "anonymous":
        return server.client()
    if caller == "badpass":
        user = bad_password_user()
        return server.client(auth=(user, password(user) + "-wrong"))
    user = user_of(caller)
    assert user is not None
    return server.client(user)


def role_in_dev(caller: str) -> int:
    """The caller's rank in `dev`: administrators pass everything; 0 for no role."""
    if caller == "admin":
        return 99
    user = user_of(caller)
    return RANK.get(user or "", 0)


def dev_allows(caller: str, route: str) -> bool:
    return role_in_dev(caller) >= RANK[MINIMUM[route]]


# -- requests and checks --------------------------------------------------------------------------
def request(http: httpx.Client, route: str, base: str, thread_id: str | None = None,
            **start: str) -> httpx.Response:
    """Call `route` under `base` (`/ps/service` or `/ps/service/groups/G`)."""
    if route == "list":
        return http.get(f"{base}/threads")
    if route == "start":
        data = {"job": "sleep", "seconds": "0", "steps": "1", **start}
        return http.post(f"{base}/threads", data=data)
    url = f"{base}/threads/{thread_id}"
    if route == "get":
        return http.get(url)
    if route == "progress":
        return http.get(f"{url}/progress")
    if route == "logs":
        return http.get(f"{url}/logs")
    if route == "cancel":
        return http.post(f"{url}/cancel")
    if route == "delete":
        return http.delete(url)
    raise AssertionError(route)


def xml_of(response: httpx.Response) -> ET.Element:
    assert response.headers.get("content-type") == XML, (
        f"{response.request.method} {response.request.url.path}: Content-Type "
        f"{response.headers.get('content-type')!r}, not {XML!r}"
    )
    return ET.fromstring(response.content)


def assert_error(response: httpx.Response, status: int, error_id: str) -> ET.Element:
    where = f"{response.request.method} {response.request.url.path}"
    assert response.status_code == status, f"{where}: {response.status_code} {response.text[:400]}"
    root = xml_of(response)
    assert root.tag == "error", f"{where}: {response.text[:400]}"
    assert root.get("id") == error_id, f"{where}: error id {root.get('id')}, not {error_id}"
    request_el = root.find("request")
    assert request_el is not None and request_el.text == response.request.url.path, where
    message = root.find("message")
    assert message is not None and (message.text or "").strip(), f"{where}: empty <message>"
    if status == 401:
        assert response.headers.get("www-authenticate"), f"{where}: 401 without WWW-Authenticate"
    return root


def assert_thread(
    response: httpx.Response, status: int, thread_id: str | None = None
) -> ET.Element:
    where = f"{response.request.method} {response.request.url.path}"
    assert response.status_code == status, f"{where}: {response.status_code} {response.text[:400]}"
    root = xml_of(response)
    assert root.tag == "thread", f"{where}: {response.text[:400]}"
    assert THREAD_ID.fullmatch(root.get("id", "")), where
    if thread_id is not None:
        assert root.get("id") == thread_id, where
    return root


def assert_status(server: Server, thread_id: str, expected: set[str]) -> None:
    with server.client("admin") as http:
        root = assert_thread(http.get(f"{SERVICE}/threads/{thread_id}/progress"), 200, thread_id)
    assert root.get("status") in expected, f"thread {thread_id} is {root.get('status')}"


def assert_node_visibility(root: ET.Element, caller: str) -> None:
    """docs/api.md#the-thread-document, #durability: a running thread shows `node` and `heartbeat` to administrators only."""
    if caller == "admin":
        if root.get("status") not in FINAL | {"initialised"}:
            assert root.get("node"), f"admin does not see node: {ET.tostring(root)!r}"
    else:
        assert root.get("node") is None and root.get("heartbeat") is None, (
            f"{caller} sees node/heartbeat: {ET.tostring(root)!r}"
        )


# -- threads --------------------------------------------------------------------------------------
def start(server: Server, user: str, group: str | None, seconds: float = 60) -> str:
    base = f"{SERVICE}/groups/{group}" if group else SERVICE
    with server.client(user) as http:
        response = http.post(
            f"{base}/threads", data={"job": "sleep", "seconds": str(seconds), "steps": "10"}
        )
    return assert_thread(response, 202).get("id", "")


def finished(server: Server, user: str, group: str | None) -> str:
    thread_id = start(server, user, group, seconds=0)
    with server.client("admin") as http:
        wait_for(
            http, f"{SERVICE}/threads/{thread_id}/progress",
            lambda r: 'status="completed"' in r.text,
        )
    return thread_id


@dataclass(frozen=True)
class Threads:
    dev_running: str  # in dev, started by OWNER
    dev_finished: str  # in dev, started by OWNER, completed
    other_running: str  # in other, started by othermgr
    server_running: str  # server level, started by admin


@pytest.fixture(scope="module")
def threads(server: Server) -> Iterator[Threads]:
    made = Threads(
        dev_running=start(server, OWNER, "dev"),
        dev_finished=finished(server, OWNER, "dev"),
        other_running=start(server, "othermgr", "other"),
        server_running=start(server, "admin", None),
    )
    yield made
    with server.client("admin") as http:
        for thread_id in (made.dev_running, made.other_running, made.server_running):
            http.post(f"{SERVICE}/threads/{thread_id}/cancel")


def matrix(routes: tuple[str, ...] = ROUTES) -> list[tuple[str, str]]:
    return [(route, caller) for route in routes for caller in CALLERS]


# -- server level ---------------------------------------------------------------------------------
def server_expected(route: str, caller: str) -> int:
    """docs/api.md#services: list, start, logs, cancel, delete are for administrators (403 to others);
    get/progress are for the owner or an administrator (404 to others)."""
    if caller in UNAUTHENTICATED:
        return 401
    if caller == "admin":
        return {"start": 202, "delete": 409}.get(route, 200)  # the shared thread is running
    if route in ("get", "progress"):
        return 200 if user_of(caller) == OWNER else 404
    return 403


@pytest.mark.parametrize(("route", "caller"), matrix())
def test_server_route(server: Server, threads: Threads, route: str, caller: str) -> None:
    expected = server_expected(route, caller)
    target = threads.dev_running
    if route == "cancel" and expected == 200:
        target = start(server, "approver", "dev")
    with client(server, caller) as http:
        response = request(http, route, SERVICE, target)
    if expected == 401:
        assert_error(response, 401, "0100")
    elif expected == 403:
        assert_error(response, 403, "0101")
    elif expected == 404:
        assert_error(response, 404, "0203")
    elif expected == 409:
        assert_error(response, 409, "0403")
    elif route == "list":
        assert response.status_code == 200, response.text
        root = xml_of(response)
        assert root.tag == "threads"
        ids = {t.get("id") for t in root.findall("thread")}
        assert {threads.dev_running, threads.other_running, threads.server_running} <= ids
    elif route == "start":
        root = assert_thread(response, 202)
        assert root.get("groupid") == "-1"
        assert root.get("username") == "admin"
    elif route in ("get", "progress"):
        root = assert_thread(response, 200, target)
        assert root.get("username") == OWNER
        assert_node_visibility(root, caller)
    elif route == "logs":
        assert response.status_code == 200, response.text
        root = xml_of(response)
        assert root.tag == "logs" and root.get("thread") == target
    elif route == "cancel":
        assert response.status_code == 200, response.text
        root = xml_of(response)
        assert root.tag == "thread-cancel"
        assert [t.get("id") for t in root.findall("thread")] == [target]
        with server.client("admin") as admin:
            wait_for(admin, f"{SERVICE}/threads/{target}/progress",
                     lambda r: 'status="cancelled"' in r.text, timeout=5)
    else:
        raise AssertionError((route, expected))
    if route in ("cancel", "delete") and target == threads.dev_running:
        assert_status(server, threads.dev_running, {"initialised", "inprogress"})


@pytest.mark.parametrize("caller", CALLERS)
def test_server_delete_finished(server: Server, threads: Threads, caller: str) -> None:
    """DELETE /threads/{id} of a finished thread: 204 for an administrator only."""
    allowed = caller == "admin"
    target = finished(server, OWNER, "dev") if allowed else threads.dev_finished
    with client(server, caller) as http:
        response = http.delete(f"{SERVICE}/threads/{target}")
    if caller in UNAUTHENTICATED:
        assert_error(response, 401, "0100")
    elif not allowed:
        assert_error(response, 403, "0101")
    else:
        assert response.status_code == 204, response.text
        assert response.content == b""
        with server.client("admin") as admin:
            assert_error(admin.get(f"{SERVICE}/threads/{target}"), 404, "0203")
    if not allowed:
        assert_status(server, threads.dev_finished, {"completed"})


@pytest.mark.parametrize(("route", "caller"), matrix(("get", "progress")))
def test_server_level_thread_is_hidden(server: Server, threads: Threads, route: str,
                                       caller: str) -> None:
    """A server-level thread started by admin: only administrators see it (404 to others)."""
    with client(server, caller) as http:
        response = request(http, route, SERVICE, threads.server_running)
    if caller in UNAUTHENTICATED:
        assert_error(response, 401, "0100")
    elif caller == "admin":
        root = assert_thread(response, 200, threads.server_running)
        assert root.get("groupid") == "-1"
    else:
        assert_error(response, 404, "0203")


# -- group level ----------------------------------------------------------------------------------
DEV = f"{SERVICE}/groups/dev"


def group_expected(route: str, caller: str) -> int:
    if caller in UNAUTHENTICATED:
        return 401
    if not dev_allows(caller, route):
        return 403
    return {"start": 202, "delete": 409}.get(route, 200)  # the shared thread is running


@pytest.mark.parametrize(("route", "caller"), matrix())
def test_group_route(server: Server, threads: Threads, route: str, caller: str) -> None:
    expected = group_expected(route, caller)
    target = threads.dev_running
    if route == "cancel" and expected == 200:
        # a fresh thread; the owner cancels its own, the others one started by approver
        target = start(server, OWNER if caller == "owner" else "approver", "dev")
    with client(server, caller) as http:
        response = request(http, route, DEV, target)
    if expected == 401:
        assert_error(response, 401, "0100")
    elif expected == 403:
        assert_error(response, 403, "0101")
    elif expected == 409:
        assert_error(response, 409, "0403")
    elif route == "list":
        assert response.status_code == 200, response.text
        root = xml_of(response)
        assert root.tag == "threads"
        ids = {t.get("id") for t in root.findall("thread")}
        assert threads.dev_running in ids
        assert threads.other_running not in ids and threads.server_running not in ids
        assert {t.get("groupid") for t in root.findall("thread")} == {"240"}
    elif route == "start":
        root = assert_thread(response, 202)
        assert root.get("groupid") == "240"
        assert root.get("username") == user_of(caller)
    elif route in ("get", "progress"):
        root = assert_thread(response, 200, target)
        assert root.get("groupid") == "240"
        assert_node_visibility(root, caller)
    elif route == "logs":
        assert response.status_code == 200, response.text
        root = xml_of(response)
        assert root.tag == "logs" and root.get("thread") == target
    elif route == "cancel":
        assert response.status_code == 200, response.text
        root = xml_of(response)
        assert root.tag == "thread-cancel"
        assert [t.get("id") for t in root.findall("thread")] == [target]
        with server.client("admin") as admin:
            wait_for(admin, f"{SERVICE}/threads/{target}/progress",
                     lambda r: 'status="cancelled"' in r.text, timeout=5)
    else:
        raise AssertionError((route, expected))
    if route in ("cancel", "delete") and target == threads.dev_running:
        assert_status(server, threads.dev_running, {"initialised", "inprogress"})


@pytest.mark.parametrize("caller", CALLERS)
def test_group_delete_finished(server: Server, threads: Threads, caller: str) -> None:
    """DELETE /groups/dev/threads/{id} of a finished thread: 204 from manager up."""
    allowed = caller not in UNAUTHENTICATED and dev_allows(caller, "delete")
    target = finished(server, OWNER, "dev") if allowed else threads.dev_finished
    with client(server, caller) as http:
        response = http.delete(f"{DEV}/threads/{target}")
    if caller in UNAUTHENTICATED:
        assert_error(response, 401, "0100")
    elif not allowed:
        assert_error(response, 403, "0101")
    else:
        assert response.status_code == 204, response.text
        assert response.content == b""
        with server.client("admin") as admin:
            assert_error(admin.get(f"{DEV}/threads/{target}"), 404, "0203")
            assert_error(admin.get(f"{SERVICE}/threads/{target}"), 404, "0203")
    if not allowed:
        assert_status(server, threads.dev_finished, {"completed"})


# -- a thread under a group that is not its own -------------------------------------------------
def assert_not_here(response: httpx.Response, route: str) -> None:
    """A thread not in this group: 404 0203, except cancel: 200 with an empty <thread-cancel/>."""
    if route == "cancel":
        assert response.status_code == 200, response.text
        root = xml_of(response)
        assert root.tag == "thread-cancel"
        assert len(root) == 0, f"not empty: {response.text}"
    else:
        assert_error(response, 404, "0203")


@pytest.mark.parametrize(("route", "caller"), matrix(THREAD_ROUTES))
def test_thread_of_other_group_under_dev(server: Server, threads: Threads, route: str,
                                         caller: str) -> None:
    """/groups/dev/threads/{a thread of `other`}: the role in dev first (403), then 404."""
    with client(server, caller) as http:
        response = request(http, route, DEV, threads.other_running)
    if caller in UNAUTHENTICATED:
        assert_error(response, 401, "0100")
    elif not dev_allows(caller, route):
        assert_error(response, 403, "0101")
    else:
        assert_not_here(response, route)
    if route in ("cancel", "delete"):
        assert_status(server, threads.other_running, {"initialised", "inprogress"})


@pytest.mark.parametrize("route", THREAD_ROUTES)
@pytest.mark.parametrize("caller", ["othermgr", "contributor", "manager"])
def test_dev_thread_under_other(server: Server, threads: Threads, route: str, caller: str) -> None:
    """/groups/other/threads/{a dev thread}: othermgr (manager of other) gets 404, dev members
    (no role in other) get 403, even for the thread they can see under dev."""
    with client(server, caller) as http:
        response = request(http, route, f"{SERVICE}/groups/other", threads.dev_running)
    if caller == "othermgr":
        assert_not_here(response, route)
    else:
        assert_error(response, 403, "0101")
    if route in ("cancel", "delete"):
        assert_status(server, threads.dev_running, {"initialised", "inprogress"})


@pytest.mark.parametrize("route", THREAD_ROUTES)
@pytest.mark.parametrize("caller", ["manager", "admin"])
def test_server_thread_under_group(server: Server, threads: Threads, route: str,
                                   caller: str) -> None:
    """A server-level thread is in no group: under dev it is 404 (cancel: empty)."""
    with client(server, caller) as http:
        response = request(http, route, DEV, threads.server_running)
    assert_not_here(response, route)
    if route in ("cancel", "delete"):
        assert_status(server, threads.server_running, {"initialised", "inprogress"})


# -- unknown threads ------------------------------------------------------------------------------
@pytest.mark.parametrize("thread_id", [UNKNOWN_ID, "not-a-thread-id"])
@pytest.mark.parametrize(("route", "caller"), matrix(THREAD_ROUTES))
def test_unknown_thread_in_group(server: Server, route: str, caller: str, thread_id: str) -> None:
    with client(server, caller) as http:
        response = request(http, route, DEV, thread_id)
    if caller in UNAUTHENTICATED:
        assert_error(response, 401, "0100")
    elif not dev_allows(caller, route):
        assert_error(response, 403, "0101")
    else:
        assert_not_here(response, route)


@pytest.mark.parametrize("thread_id", [UNKNOWN_ID, "not-a-thread-id"])
@pytest.mark.parametrize(("route", "caller"),
                         [(r, c) for r in THREAD_ROUTES for c in ("anonymous", "outsider",
                                                                  "owner", "manager", "admin")])
def test_unknown_thread_at_server(server: Server, route: str, caller: str, thread_id: str) -> None:
    with client(server, caller) as http:
        response = request(http, route, SERVICE, thread_id)
    if caller in UNAUTHENTICATED:
        assert_error(response, 401, "0100")
    elif route in ("get", "progress"):
        assert_error(response, 404, "0203")
    elif caller != "admin":
        assert_error(response, 403, "0101")
    else:
        assert_not_here(response, route)


# -- groups: unknown, numeric ---------------------------------------------------------------------
@pytest.mark.parametrize("group", ["nosuchgroup", "999999"])
@pytest.mark.parametrize(("route", "caller"),
                         [(r, c) for r in ROUTES for c in ("anonymous", "outsider", "manager",
                                                           "admin")])
def test_unknown_group(server: Server, threads: Threads, route: str, caller: str,
                       group: str) -> None:
    with client(server, caller) as http:
        response = request(http, route, f"{SERVICE}/groups/{group}", threads.dev_running)
    if caller in UNAUTHENTICATED:
        assert_error(response, 401, "0100")
    else:
        assert_error(response, 404, "0202")
    if route in ("cancel", "delete"):
        assert_status(server, threads.dev_running, {"initialised", "inprogress"})


def test_numeric_group_is_an_id(server: Server, threads: Threads) -> None:
    with server.client("contributor") as http:
        listed = http.get(f"{SERVICE}/groups/240/threads")
        assert listed.status_code == 200, listed.text
        ids = {t.get("id") for t in xml_of(listed).findall("thread")}
        assert threads.dev_running in ids and threads.other_running not in ids
        started = assert_thread(
            http.post(f"{SERVICE}/groups/240/threads", data={"job": "sleep", "seconds": "0"}), 202
        )
        assert started.get("groupid") == "240"
        # contributor has no role in `other` (241)
        assert_error(http.get(f"{SERVICE}/groups/241/threads"), 403, "0101")
    with server.client("reviewer") as http:
        assert_thread(http.get(f"{SERVICE}/groups/240/threads/{threads.dev_running}"), 200,
                      threads.dev_running)
        assert_thread(http.get(f"{SERVICE}/groups/240/threads/{threads.dev_running}/progress"),
                      200, threads.dev_running)
        assert_error(http.get(f"{SERVICE}/groups/240/threads/{threads.dev_running}/logs"),
                     403, "0101")
    with server.client("othermgr") as http:
        assert_error(http.get(f"{SERVICE}/groups/241/threads/{threads.dev_running}"), 404, "0203")
        assert_thread(http.get(f"{SERVICE}/groups/241/threads/{threads.other_running}"), 200,
                      threads.other_running)
        assert_error(http.get(f"{SERVICE}/groups/240/threads"), 403, "0101")


# -- Bearer tokens --------------------------------------------------------------------------------
def bearer(server: Server, token: str) -> httpx.Client:
    return server.client(headers={"Authorization": f"Bearer {token}"})


def test_bearer_tokens_work_like_basic(server: Server, threads: Threads,
                                       tokens: dict[str, str]) -> None:
    with bearer(server, tokens["manager"]) as http:
        listed = http.get(f"{DEV}/threads")
        assert listed.status_code == 200, listed.text
        assert threads.dev_running in {t.get("id") for t in xml_of(listed).findall("thread")}
        assert_error(http.get(f"{SERVICE}/threads"), 403, "0101")
        assert_error(http.get(f"{SERVICE}/threads/{threads.dev_running}"), 404, "0203")
    with bearer(server, tokens["reviewer"]) as http:
        assert_thread(http.get(f"{DEV}/threads/{threads.dev_running}/progress"), 200,
                      threads.dev_running)
        assert_error(http.get(f"{DEV}/threads"), 403, "0101")
        assert_error(http.post(f"{DEV}/threads", data={"job": "sleep", "seconds": "0"}),
                     403, "0101")
    with bearer(server, tokens[OWNER]) as http:
        assert_thread(http.get(f"{SERVICE}/threads/{threads.dev_running}"), 200,
                      threads.dev_running)
        started = assert_thread(
            http.post(f"{DEV}/threads", data={"job": "sleep", "seconds": "0"}), 202
        )
        assert started.get("username") == OWNER
    with bearer(server, tokens["outsider"]) as http:
        assert_error(http.get(f"{DEV}/threads/{threads.dev_running}"), 403, "0101")
    with bearer(server, tokens["admin"]) as http:
        listed = http.get(f"{SERVICE}/threads")
        assert listed.status_code == 200, listed.text
        assert xml_of(listed).tag == "threads"


@pytest.mark.parametrize("token", ["tsv_not-a-real-token", "garbage", "tsv_"])
@pytest.mark.parametrize("route", ["list", "get"])
def test_bad_bearer_token(server: Server, threads: Threads, token: str, route: str) -> None:
    with bearer(server, token) as http:
        response = request(http, route, DEV, threads.dev_running)
    assert_error(response, 401, "0100")
    assert response.headers["www-authenticate"].lower().startswith("bearer")


# -- refused starts started nothing ---------------------------------------------------------------
def test_refused_starts_started_nothing(server: Server, threads: Threads) -> None:
    """Every start refused above (403/401/404) left no thread behind."""
    with server.client("admin") as http:
        for user in ("outsider", "reviewer"):
            response = http.get(f"{SERVICE}/threads", params={"status": "all", "username": user})
            assert response.status_code == 200, response.text
            assert xml_of(response).get("total") == "0", f"{user}: {response.text}"
        response = http.get(f"{SERVICE}/threads", params={"status": "all", "username": "othermgr"})
        assert xml_of(response).get("total") == "1", response.text  # only its thread in other
