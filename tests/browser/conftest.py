"""Browser tests: the real app served on loopback, driven by Playwright in Debian's Chromium.

Playwright's own browser download is never used (this must work offline): the tests launch
/usr/bin/chromium. When it is missing, the setup installs Debian's `chromium` package if it
can (root with apt-get); otherwise the tests are skipped, or fail under REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from config import Settings
from tests.browser.accessibility import AccessibilityAudit, AuditedBrowser, axe_source
from tests.conftest import REPO_ROOT, unavailable
from web import create_app

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = REPO_ROOT / "test-artifacts" / "screenshots"
# Without these Chromium keeps trying to reach Google's services, which this machine refuses.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _ensure_chromium() -> str | None:
    if Path(CHROMIUM).exists():
        return CHROMIUM
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=False, timeout=300)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "chromium"], env=env, check=False, timeout=600
        )
    return CHROMIUM if Path(CHROMIUM).exists() else None


@pytest.fixture(scope="session")
def chromium() -> Iterator[object]:
    executable = _ensure_chromium()
    if executable is None:
        unavailable("Debian's chromium is not installed and could not be installed")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("the playwright package is not installed")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def axe_script() -> str:
    return axe_source()


@pytest.fixture
def browser(chromium, axe_script: str) -> Iterator[AuditedBrowser]:  # type: ignore[no-untyped-def]
    """Chromium whose every page is checked with axe-core (tests/browser/accessibility.py);
    a serious or critical violation fails the test that visited the page."""
    audited = AuditedBrowser(chromium, AccessibilityAudit(axe_script))
    yield audited
    audited.close_contexts()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    # After the test body, still inside its call: a violation fails the test itself (not
    # its teardown), and a test that failed on its own keeps its own error.
    result = yield
    audited = getattr(item, "funcargs", {}).get("browser")
    if isinstance(audited, AuditedBrowser):
        audited.audit.finish()
        if audited.audit.failed():
            raise AssertionError(audited.audit.report())
    return result


class LiveServer:
    def __init__(self, settings: Settings) -> None:
        self.app = create_app(settings)
        self._server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(timeout=10)


@pytest.fixture
def live_server(settings: Settings, engine) -> Iterator[LiveServer]:  # type: ignore[no-untyped-def]
    # `engine` empties the tables; the server builds its own engine for the same database.
    server = LiveServer(settings)
    yield server
    server.stop()


@pytest.fixture
def screenshot(request: pytest.FixtureRequest, browser: AuditedBrowser):  # type: ignore[no-untyped-def]
    """Check the page with axe-core, then save a full-page screenshot as a test artifact:
    shot(page, "name")."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    params = request.node.callspec.params if hasattr(request.node, "callspec") else {}
    backend = params.get("database_url", "db")
    # A test run under pinned dates keeps one set of pictures per date.
    suffix = f"{backend}-{params['pinned_instant']}" if "pinned_instant" in params else backend

    def shot(page, name: str) -> Path:  # type: ignore[no-untyped-def]
        browser.audit.check(page)
        path = ARTIFACTS / f"{name}-{suffix}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return shot
