"""The administration pages in Chromium: users, groups, memberships, OAuth clients, webhooks and
the audit log, each as a role that may (admin; manager of dev for dev's members and webhooks)
and one that may not (othermgr, contributor); each change found in the audit log with the
signed-in user as its actor."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from lxml import etree

from tests.console.conftest import UI, Browsing, sign_in, start_sleep
from tests.support import Receiver, Server, running_server, wait_final

pytestmark = [pytest.mark.slow, pytest.mark.browser]

ADMIN = f"{UI}/admin"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, str]]]:
    directory = tmp_path_factory.mktemp("console-administration")
    # no cache of bearer tokens: a revoked token is refused at its next use
    yield from running_server(directory, **{"webhook-allow-private": True, "auth-cache-seconds": 0})


def cli(server: Server, *args: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "threadsvc", *args[:2], "--config", str(server.config), *args[2:]],
        check=True, capture_output=True, text=True,
    ).stdout


def audit(server: Server, **query: str) -> list[dict[str, str]]:
    """The audit log's entries (as attributes and `text`), through the API."""
    with server.client("admin") as http:
        answer = http.get("/ps/service/audit", params=query)
    assert answer.status_code == 200, answer.text
    return [{**e.attrib, "text": e.text or ""} for e in etree.fromstring(answer.content)]


def did(server: Server, action: str, target: str) -> list[dict[str, str]]:
    return [e for e in audit(server, action=action, user=target) if e["target"] == target]


def csrf(page: Any) -> str:
    """The session's CSRF token, from the sign-out form every page has."""
    return str(page.locator("input[name=csrf]").first.get_attribute("value"))


def forged(page: Any, path: str, **fields: str) -> Any:
    """A POST with the viewer's own session and a valid token, as a crafted form would send."""
    return page.request.post(path, form={"csrf": csrf(page), **fields}, max_redirects=0)


def done(page: Any) -> str:
    return str(page.get_by_role("status").inner_text())


def no_side_scroll(page: Any) -> bool:
    return bool(page.evaluate(
        "document.scrollingElement.scrollWidth <= document.scrollingElement.clientWidth"))


def test_the_admin_entry_and_index_follow_the_role(browsing: Browsing) -> None:
    page = browsing.signed_in("admin")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Admin").click()
    page.wait_for_url(re.compile(r".*/ps/ui/admin$"))
    for name in ("Users", "Groups", "OAuth clients", "Server webhooks", "Audit log"):
        assert page.locator("main").get_by_role("link", name=re.compile(f"^{name}")).is_visible()
    browsing.shot(page, "admin")

    manager = browsing.signed_in("manager")
    manager.get_by_role("navigation", name="Main").get_by_role("link", name="Admin").click()
    links = manager.locator(".admin-links a")
    assert links.count() == 1 and links.first.inner_text().startswith("dev")
    assert manager.get_by_role("link", name=re.compile("^Users")).count() == 0
    browsing.shot(manager, "manager")

    other = browsing.signed_in("othermgr")
    other.goto(ADMIN)
    assert other.locator(".admin-links a").all_inner_texts()[0].startswith("other")

    contributor = browsing.signed_in("contributor")
    nav = contributor.get_by_role("navigation", name="Main")
    assert nav.get_by_role("link", name="Admin").count() == 0
    for path in ("", "/users", "/groups", "/clients", "/audit", "/groups/dev", "/webhooks"):
        assert contributor.goto(ADMIN + path).status == 403, path
    browsing.shot(contributor, "refused")


def test_users_are_listed_searched_and_added_by_administrators_only(
    browsing: Browsing, server: Server
) -> None:
    page = browsing.signed_in("admin")
    page.goto(f"{ADMIN}/users")
    names = page.locator("table.users td[data-label='User']").all_inner_texts()
    assert names == sorted(names) and {"admin", "manager", "outsider"} <= set(names)

    page.get_by_label("Username").fill("carol")
    page.get_by_label("Password", exact=True).fill("carol-secret-1")
    page.get_by_label("Password again").fill("carol-secret-2")
    page.get_by_role("button", name="Add the user").click()
    assert "differs from the password" in page.get_by_role("alert").inner_text()
    assert page.get_by_label("Username").input_value() == "carol"  # kept
    assert page.get_by_label("Password", exact=True).input_value() == ""  # never echoed
    assert "carol-secret" not in page.content()
    browsing.shot(page, "error")

    page.get_by_label("Username").fill("bad name")
    page.get_by_role("button", name="Add the user").click()
    assert "whitespace" in page.get_by_role("alert").inner_text()

    page.get_by_label("Username").fill("carol")
    page.get_by_label("Password", exact=True).fill("carol-secret-1")
    page.get_by_label("Password again").fill("carol-secret-1")
    page.get_by_role("button", name="Add the user").click()
    page.wait_for_url(re.compile(r".*/admin/user\?name=carol&done=user-added$"))
    assert done(page) == "The user is added."
    page.goto(f"{ADMIN}/users")
    page.get_by_label("Username").fill("carol")
    page.get_by_role("button", name="Add the user").click()
    assert "exists" in page.get_by_role("alert").inner_text()  # taken: said on the form

    page.goto(f"{ADMIN}/users")
    page.get_by_label("Name contains").fill("CAR")
    page.get_by_role("button", name="Search").click()
    assert page.locator("table.users td[data-label='User']").all_inner_texts() == ["carol"]
    browsing.shot(page, "search")
    [entry] = did(server, "user.add", "carol")
    assert entry["actor"] == "admin" and entry["address"] == "127.0.0.1"

    page.set_viewport_size({"width": 375, "height": 800})
    page.goto(f"{ADMIN}/users")
    assert no_side_scroll(page)
    browsing.shot(page, "phone")

    manager = browsing.signed_in("manager")
    assert manager.goto(f"{ADMIN}/users").status == 403
    assert manager.goto(f"{ADMIN}/user?name=carol").status == 403
    answer = forged(manager, f"{ADMIN}/users", username="mallory", password="x", again="x")
    assert answer.status == 403
    assert not did(server, "user.add", "mallory")


def test_an_administrator_resets_disables_unlocks_and_revokes(
    browsing: Browsing, server: Server
) -> None:
    page = browsing.signed_in("admin")
    page.goto(f"{ADMIN}/users")
    page.get_by_label("Username").fill("dave")
    page.get_by_label("Password", exact=True).fill("dave-pw-1")
    page.get_by_label("Password again").fill("dave-pw-1")
    page.get_by_role("button", name="Add the user").click()
    page.wait_for_url(re.compile(r".*done=user-added$"))
    browsing.shot(page, "user")

    # the password: the CLI's rule (not empty, the same twice), never put back in the page
    page.get_by_label("New password", exact=True).fill("dave-pw-2")
    page.get_by_label("New password again").fill("dave-pw-3")
    page.get_by_role("button", name="Set the password").click()
    assert "differs" in page.get_by_role("alert").inner_text()
    assert "dave-pw-2" not in page.content()
    page.get_by_label("New password", exact=True).fill("dave-pw-2")
    page.get_by_label("New password again").fill("dave-pw-2")
    page.get_by_role("button", name="Set the password").click()
    assert done(page).startswith("The password is changed")
    with httpx.Client(base_url=server.url, timeout=30) as http:
        assert http.get("/ps/service/threads", auth=("dave", "dave-pw-1")).status_code == 401
        assert http.get("/ps/service/groups/dev/jobs", auth=("dave", "dave-pw-2")).status_code == 403

    # a lockout, then unlock
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for _ in range(6):
            http.get("/ps/service/threads", auth=("dave", "wrong"))
    page.reload()
    assert "locked until" in page.locator("dl.details").inner_text()
    page.get_by_role("button", name="Unlock").click()
    assert done(page) == "The lockout is lifted."
    assert "not locked" in page.locator("dl.details").inner_text()

    # revoke: asked first (without JavaScript too), then every token is gone
    token = cli(server, "user", "token", "dave").strip()
    bearer = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{server.url}/ps/service/groups/dev/jobs", headers=bearer).status_code == 403
    plain = browsing.page(java_script_enabled=False)
    sign_in(plain, "admin")
    plain.goto(f"{ADMIN}/user?name=dave")
    plain.get_by_role("link", name="Revoke every token…").click()
    assert "Revoke every token of 'dave'?" in plain.locator(".confirm").inner_text()
    browsing.shot(plain, "confirm")
    plain.get_by_role("button", name="Revoke every token").click()
    assert done(plain).startswith("Every API token and OAuth client of the user is deleted")
    assert httpx.get(f"{server.url}/ps/service/groups/dev/jobs", headers=bearer).status_code == 401

    # disable, asked first; "Keep it" changes nothing
    page.goto(f"{ADMIN}/user?name=dave")
    page.get_by_role("link", name="Disable…").click()
    page.get_by_role("link", name="Keep it").click()
    assert "enabled" in page.locator("dl.details").inner_text()
    page.get_by_role("link", name="Disable…").click()
    page.get_by_role("button", name="Disable").click()
    assert done(page).startswith("The user is disabled")
    assert httpx.get(f"{server.url}/ps/service/threads",
                     auth=("dave", "dave-pw-2")).status_code == 401
    page.get_by_role("button", name="Enable").click()
    assert done(page).startswith("The user is enabled")

    # an administrator is not offered to disable themselves, and a forged form is refused
    page.goto(f"{ADMIN}/user?name=admin")
    assert page.get_by_role("link", name="Disable…").count() == 0
    assert forged(page, f"{ADMIN}/user/disable", username="admin").status == 400

    for action in ("user.passwd", "user.unlock", "token.revoke", "user.disable", "user.enable"):
        [entry] = did(server, action, "dave")
        assert entry["actor"] == "admin", action

    # a manager may touch no account
    manager = browsing.signed_in("manager")
    for action in ("disable", "revoke"):
        assert manager.goto(f"{ADMIN}/user/{action}?name=dave").status == 403
    for action in ("password", "disable", "enable", "unlock", "revoke"):
        answer = forged(manager, f"{ADMIN}/user/{action}", username="dave", password="p",
                        again="p")
        assert answer.status == 403, action
    assert len(did(server, "user.disable", "dave")) == 1
    assert httpx.get(f"{server.url}/ps/service/groups/dev/jobs",
                     auth=("dave", "dave-pw-2")).status_code == 403  # still dave's password


def test_groups_are_listed_and_added(browsing: Browsing, server: Server) -> None:
    page = browsing.signed_in("admin")
    page.goto(f"{ADMIN}/groups")
    assert {"dev", "other"} <= set(page.locator("td[data-label='Group']").all_inner_texts())
    page.get_by_label("Name").fill("Bad Name")
    page.get_by_role("button", name="Add the group").click()
    assert "must match" in page.get_by_role("alert").inner_text()
    assert page.get_by_label("Name").input_value() == "Bad Name"
    page.get_by_label("Name").fill("dev")
    page.get_by_role("button", name="Add the group").click()
    assert "exists" in page.get_by_role("alert").inner_text()
    page.get_by_label("Name").fill("ops")
    page.get_by_role("button", name="Add the group").click()
    page.wait_for_url(re.compile(r".*/admin/groups/ops\?done=group-added$"))
    assert page.get_by_text("No member yet.").is_visible()
    browsing.shot(page, "new")
    page.goto(f"{ADMIN}/groups")
    browsing.shot(page, "list")
    [entry] = did(server, "group.add", "ops")
    assert entry["actor"] == "admin"

    manager = browsing.signed_in("manager")
    manager.goto(f"{ADMIN}/groups")
    assert manager.locator("td[data-label='Group']").all_inner_texts() == ["dev"]
    assert manager.get_by_role("button", name="Add the group").count() == 0
    browsing.shot(manager, "manager")
    assert forged(manager, f"{ADMIN}/groups", name="mine").status == 403
    assert not did(server, "group.add", "mine")


def test_a_manager_manages_the_members_of_their_group_only(
    browsing: Browsing, server: Server
) -> None:
    page = browsing.signed_in("manager")
    page.goto(f"{ADMIN}/groups/dev")
    rows = page.locator("table.members tbody tr")
    by_name = {rows.nth(i).locator("td").first.inner_text(): rows.nth(i) for i in range(rows.count())}
    assert by_name["approver"].locator("select").count() == 0  # above a manager: read only
    assert by_name["approver"].get_by_role("link", name=re.compile("^Remove")).count() == 0
    options = page.get_by_label("Role", exact=True).locator("option").all_inner_texts()
    assert options == ["reviewer", "contributor", "manager"]  # a manager may make a manager

    page.get_by_label("Username").fill("nobody-here")
    page.get_by_role("button", name="Add", exact=True).click()
    assert "names no user" in page.get_by_role("alert").inner_text()
    assert page.get_by_label("Username").input_value() == "nobody-here"
    page.get_by_label("Username").fill("outsider")
    page.get_by_role("button", name="Add", exact=True).click()
    assert done(page) == "The member is added."
    page.get_by_label("Role of outsider").select_option("manager")
    page.get_by_role("button", name="Change the role of outsider").click()
    assert done(page) == "The member's role is changed."
    browsing.shot(page, "members")

    # forged: a role above their own, or a member above them, or another group
    assert forged(page, f"{ADMIN}/groups/dev/members", username="reviewer",
                  role="approver").status == 403
    assert forged(page, f"{ADMIN}/groups/dev/members/remove", username="approver").status == 403
    assert forged(page, f"{ADMIN}/groups/other/members", username="outsider",
                  role="reviewer").status == 403
    assert page.goto(f"{ADMIN}/groups/other").status == 403
    assert page.goto(f"{ADMIN}/groups/dev/members/remove?name=approver").status == 403

    page.goto(f"{ADMIN}/groups/dev")
    page.get_by_role("link", name="Remove… outsider").click()
    assert "Remove 'outsider' (manager) from group 'dev'?" in page.locator(".confirm").inner_text()
    browsing.shot(page, "confirm")
    page.get_by_role("button", name="Remove").click()
    assert done(page) == "The member is removed."
    assert "outsider" not in page.locator("table.members").inner_text()

    entries = [e for e in audit(server, user="outsider") if e["action"].startswith("member.")]
    assert [(e["action"], e["actor"], e["group"], e["text"]) for e in entries] == [
        ("member.add", "manager", "dev", "role contributor"),
        ("member.role", "manager", "dev", "role contributor to manager"),
        ("member.remove", "manager", "dev", "role manager"),
    ]

    other = browsing.signed_in("othermgr")
    assert other.goto(f"{ADMIN}/groups/dev").status == 403
    browsing.shot(other, "refused")
    assert forged(other, f"{ADMIN}/groups/dev/members", username="outsider",
                  role="reviewer").status == 403
    contributor = browsing.signed_in("contributor")
    assert forged(contributor, f"{ADMIN}/groups/dev/members", username="outsider",
                  role="reviewer").status == 403
    assert len([e for e in audit(server, user="outsider", action="member.add")]) == 1

    admin = browsing.signed_in("admin")
    admin.goto(f"{ADMIN}/groups/dev")
    roles = admin.get_by_label("Role of approver").locator("option")
    assert roles.count() == 4  # an administrator gives any role
    browsing.shot(admin, "admin")
    admin.set_viewport_size({"width": 375, "height": 800})
    assert no_side_scroll(admin)
    browsing.shot(admin, "phone")

    # a manager who steps down is not sent to the page they just lost
    admin.get_by_label("Username").fill("outsider")
    admin.get_by_label("Role", exact=True).select_option("manager")
    admin.get_by_role("button", name="Add", exact=True).click()
    stepping = browsing.signed_in("outsider")
    stepping.goto(f"{ADMIN}/groups/dev")
    stepping.get_by_label("Role of outsider").select_option("reviewer")
    stepping.get_by_role("button", name="Change the role of outsider").click()
    stepping.wait_for_url(re.compile(r".*/ps/ui/groups$"))
    assert stepping.get_by_role("navigation", name="Main").get_by_role(
        "link", name="Admin").count() == 0
    assert stepping.goto(f"{ADMIN}/groups/dev").status == 403


def test_oauth_clients_are_listed_and_removed(browsing: Browsing, server: Server) -> None:
    out = cli(server, "client", "add", "contributor")
    client_id = dict(line.split(": ", 1) for line in out.strip().splitlines())["client_id"]
    page = browsing.signed_in("admin")
    page.goto(f"{ADMIN}/clients")
    row = page.locator("table.clients tbody tr", has_text=client_id)
    assert "contributor" in row.inner_text()
    browsing.shot(page, "list")

    manager = browsing.signed_in("manager")
    assert manager.goto(f"{ADMIN}/clients").status == 403
    assert forged(manager, f"{ADMIN}/clients/remove", client=client_id).status == 403

    row.get_by_role("link", name=re.compile("^Remove")).click()
    assert client_id in page.locator(".confirm").inner_text()
    page.get_by_role("button", name="Remove").click()
    assert done(page).startswith("The OAuth client is removed")
    assert page.locator("table.clients", has_text=client_id).count() == 0
    [entry] = [e for e in did(server, "client.remove", "contributor") if e["text"] == client_id]
    assert entry["actor"] == "admin"


def test_a_manager_manages_the_webhooks_of_their_group(browsing: Browsing, server: Server) -> None:
    receiver = Receiver()
    try:
        page = browsing.signed_in("manager")
        page.goto(f"{ADMIN}/groups/dev")
        page.get_by_role("link", name="Webhooks").click()
        page.wait_for_url(re.compile(r".*/admin/groups/dev/webhooks$"))
        page.get_by_label("Address (URL)").fill(receiver.url())
        page.get_by_label("Secret").fill("too-short")
        page.get_by_role("button", name="Register").click()
        assert "at least 16 characters" in page.get_by_role("alert").inner_text()
        assert page.get_by_label("Address (URL)").input_value() == receiver.url()
        assert page.get_by_label("Secret").input_value() == ""  # never put back
        page.get_by_label("Secret").fill("a-secret-of-sixteen-or-more")
        page.get_by_role("button", name="Register").click()
        page.wait_for_url(re.compile(r".*/admin/groups/dev/webhooks/\d+\?done=webhook-added$"))
        hook = page.url.split("/webhooks/")[1].split("?")[0]
        assert "a-secret-of-sixteen" not in page.content()

        with server.client("contributor") as http:
            thread = start_sleep(server, "contributor", seconds=0)
            wait_final(http, thread)
        deadline = 30
        while deadline and "delivered" not in page.locator("main").inner_text():
            page.wait_for_timeout(500)
            page.reload()
            deadline -= 1
        row = page.locator("table.deliveries tbody tr").first
        assert row.locator("td[data-label='Status']").text_content() == "delivered"
        assert row.locator("td[data-label='HTTP status']").inner_text() == "204"
        assert row.locator("td[data-label='Thread']").inner_text() == thread[:8]
        browsing.shot(page, "webhook")
        page.goto(f"{ADMIN}/groups/dev/webhooks")
        assert page.locator("table.webhooks tbody tr").count() == 1
        browsing.shot(page, "list")

        other = browsing.signed_in("othermgr")
        assert other.goto(f"{ADMIN}/groups/dev/webhooks").status == 403
        assert other.goto(f"{ADMIN}/groups/dev/webhooks/{hook}").status == 403
        assert forged(other, f"{ADMIN}/groups/dev/webhooks/{hook}/delete").status == 403
        assert other.goto(f"{ADMIN}/webhooks").status == 403  # the server's: administrators
        other.goto(f"{ADMIN}/groups/other")
        assert other.get_by_role("link", name="Webhooks").is_visible()
        contributor = browsing.signed_in("contributor")
        assert contributor.goto(f"{ADMIN}/groups/dev/webhooks").status == 403

        page.goto(f"{ADMIN}/groups/dev/webhooks/{hook}")
        page.get_by_role("link", name="Delete…").click()
        assert receiver.url() in page.locator(".confirm").inner_text()
        page.get_by_role("button", name="Delete").click()
        assert done(page) == "The webhook is deleted."
        assert page.get_by_text("No webhook yet.").is_visible()
        [added] = did(server, "webhook.add", hook)
        [removed] = did(server, "webhook.remove", hook)
        assert added["actor"] == removed["actor"] == "manager" and removed["group"] == "dev"

        admin = browsing.signed_in("admin")
        admin.goto(f"{ADMIN}/webhooks")
        assert admin.get_by_role("heading", name="Server webhooks").is_visible()
        browsing.shot(admin, "server")
    finally:
        receiver.close()


def test_the_audit_log_page(browsing: Browsing, server: Server) -> None:
    before = str(int(time.time() * 1000))  # the server's clock: this machine's
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for name in ["ghost<b>"] + [f"ghost-{n:02}" for n in range(55)]:  # failed sign-ins
            http.get("/ps/service/threads", auth=(name, "nope"))
    page = browsing.signed_in("admin")
    page.goto(f"{ADMIN}/audit")
    rows = page.locator("table.audit tbody tr")
    targets = rows.locator("td[data-label='Target']")
    newest = targets.all_inner_texts()
    assert len(newest) == 50 and newest[:2] == ["ghost-54", "ghost-53"]  # newest first
    assert rows.first.locator("td[data-label='Action']").inner_text() == "signin.failure"
    browsing.shot(page, "latest")
    with page.expect_navigation():  # all_inner_texts reads at once: the new page
        page.get_by_role("link", name="Older →").click()
    older = targets.all_inner_texts()
    assert older[:5] == ["ghost-04", "ghost-03", "ghost-02", "ghost-01", "ghost-00"]
    assert "ghost<b>" in older  # as text
    with page.expect_navigation():  # all_inner_texts reads at once: the new page
        page.get_by_role("link", name="Latest entries").click()
    assert targets.all_inner_texts() == newest

    page.get_by_label("Action").select_option("signin.failure")
    page.get_by_label("User").fill("ghost<b>")
    with page.expect_navigation():  # all_inner_texts reads at once: the new page
        page.get_by_role("button", name="Filter").click()
    assert rows.count() == 1
    page.get_by_label("From (UTC)").fill("yesterday")
    with page.expect_navigation():  # all_inner_texts reads at once: the new page
        page.get_by_role("button", name="Filter").click()
    assert "ISO 8601" in page.get_by_role("alert").inner_text()
    assert page.get_by_label("From (UTC)").input_value() == "yesterday"  # the form is kept
    assert page.get_by_label("User").input_value() == "ghost<b>"
    browsing.shot(page, "error")
    page.get_by_label("From (UTC)").fill(before)  # epoch ms, as the API takes
    page.get_by_label("User").fill("")
    with page.expect_navigation():  # all_inner_texts reads at once: the new page
        page.get_by_role("button", name="Filter").click()
    first = targets.all_inner_texts()
    assert len(first) == 50 and first[0] == "ghost<b>"  # as text, oldest first
    with page.expect_navigation():  # all_inner_texts reads at once: the new page
        page.get_by_role("link", name="Next →").click()
    following = targets.all_inner_texts()
    assert following[-1] == "ghost-54" and not set(first) & set(following)
    with page.expect_navigation():  # all_inner_texts reads at once: the new page
        page.get_by_role("link", name="Latest entries").click()
    assert "from=" not in page.url

    manager = browsing.signed_in("manager")
    assert manager.goto(f"{ADMIN}/audit").status == 403
    assert manager.goto(f"{ADMIN}/audit?from=bad").status == 403  # not even the parse error
