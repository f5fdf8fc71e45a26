"""The console end to end: a real server (tests/support.py) and headless Chromium through
Playwright. Every browser test leaves a screenshot in test-artifacts/console/, and every page
photographed is checked by axe-core: a serious or critical violation fails the test.

Chromium is Debian's (/usr/bin/chromium, or THREADSVC_TEST_CHROMIUM); Playwright never
downloads a browser here. Without either, the browser tests skip and say why.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import Server, password, running_server, start

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"
AXE_SCRIPT = importlib.resources.files("axe_playwright_python") / "axe.min.js"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
UI = "/ps/ui"


def chromium_path() -> str | None:
    explicit = os.environ.get("THREADSVC_TEST_CHROMIUM")
    if explicit:
        return explicit if os.path.exists(explicit) else None
    for candidate in ("/usr/bin/chromium", "/usr/bin/chromium-browser"):
        if os.path.exists(candidate):
            return candidate
    return shutil.which("chromium")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, str]]]:
    """The standard world on SQLite (the console does not depend on the store)."""
    directory = tmp_path_factory.mktemp("console")
    yield from running_server(directory, **{"max-running": 64})


@pytest.fixture(scope="module")
def browser(server: Server) -> Iterator[Any]:
    """Chromium for one module. Playwright's sync API runs an event loop in this thread while
    it is open, so the server is seeded first (anyio.run) and the browser closes with the
    module, before other modules need the thread."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("Playwright for Python is not installed (pip install playwright)")
    executable = chromium_path()
    if executable is None:
        pytest.skip("Chromium is missing (apt-get install chromium, or set "
                    "THREADSVC_TEST_CHROMIUM to its path)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


class Browsing:
    """Browser contexts for one test; the last page opened is photographed at the end."""

    def __init__(self, browser: Any, server: Server, name: str) -> None:
        self.browser = browser
        self.server = server
        self.name = name
        self.contexts: list[Any] = []
        self.pages: list[Any] = []
        self.shots = 0
        self.problems: list[str] = []  # script errors and CSP violations: each fails the test
        self.scriptless: list[Any] = []  # contexts with JavaScript off

    def page(self, **options: Any) -> Any:
        context = self.browser.new_context(
            base_url=self.server.url, **{"viewport": {"width": 1280, "height": 900}, **options}
        )
        context.set_default_timeout(15_000)
        self.contexts.append(context)
        if options.get("java_script_enabled") is False:
            self.scriptless.append(context)
        page = context.new_page()
        page.on("pageerror", lambda error: self.problems.append(f"script error: {error}"))
        page.on("console", self._console)
        self.pages.append(page)
        return page

    def _console(self, message: Any) -> None:
        # a page answered 403 or 404 on purpose is logged as a failed load: not a problem
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.problems.append(f"console error: {message.text}")  # CSP violations too

    def signed_in(self, user: str, **options: Any) -> Any:
        page = self.page(**options)
        sign_in(page, user)
        return page

    def shot(self, page: Any, label: str = "") -> Path:
        """A screenshot of the page as it is, and axe-core's check of it."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.shots += 1
        suffix = f"-{label}" if label else ""
        path = ARTIFACTS / f"{self.name}{suffix}.png"
        page.screenshot(path=str(path), full_page=True)
        if page.context not in self.scriptless:  # axe is a script: those pages go unchecked
            self.problems.extend(accessibility_problems(page))
        return path

    def close(self) -> None:
        from playwright.sync_api import Error

        if self.pages and self.shots == 0:
            with contextlib.suppress(Error):  # a page that is gone has nothing to show
                self.shot(self.pages[-1])
        for context in self.contexts:
            context.close()
        assert not self.problems, self.problems


@pytest.fixture
def browsing(browser: Any, server: Server, request: pytest.FixtureRequest) -> Iterator[Browsing]:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name).strip("-")
    found = Browsing(browser, server, name)
    try:
        yield found
    finally:
        found.close()


def accessibility_problems(page: Any) -> list[str]:
    """axe-core's serious and critical violations on the page, one line each. axe is evaluated
    through the DevTools protocol, which the console's Content-Security-Policy does not govern:
    the page itself never loads it."""
    if not page.evaluate("typeof window.axe === 'object'"):
        page.evaluate(AXE_SCRIPT.read_text(encoding="utf-8"))
    found = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    return [
        f"axe {violation['id']} ({violation['impact']}) on {page.url}: {violation['help']}: "
        + "; ".join(" ".join(node["target"]) for node in violation["nodes"][:5])
        for violation in found["violations"]
        if violation["impact"] in ("serious", "critical")
    ]


def sign_in(page: Any, user: str, secret: str | None = None) -> None:
    page.goto(f"{UI}/sign-in")
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(secret if secret is not None else password(user))
    page.get_by_role("button", name="Sign in").click()
    if secret is None:
        page.wait_for_url(re.compile(r".*/ps/ui/groups$"))


def start_sleep(server: Server, user: str, group: str | None = "dev", **params: Any) -> str:
    """Start a sleep thread through the API; returns its id."""
    where = f"/groups/{group}" if group else ""
    with server.client(user) as http:
        return start(http, f"/ps/service{where}", **params)


def thread_status(server: Server, thread_id: str) -> str:
    with server.client("admin") as http:
        response = http.get(f"/ps/service/threads/{thread_id}/progress")
    found = re.search(r'status="([a-z]+)"', response.text)
    assert found, response.text
    return found.group(1)


def cancel_all(server: Server, ids: list[str]) -> None:
    with server.client("admin") as http:
        for thread_id in ids:
            http.post(f"/ps/service/threads/{thread_id}/cancel")


def anonymous(server: Server) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=30, follow_redirects=False)
