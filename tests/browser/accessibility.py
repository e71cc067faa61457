"""axe-core run on every page the browser tests visit; serious and critical violations fail.

Every browser context handed out by the `browser` fixture is watched. A page is checked where
the test says so (every screenshot does it, and `browser.audit.check(page)`), when it or its
context is closed, and when the test ends; each document a context loads is noted, and a test
that visited a page (its path, numbers aside) without ever checking it fails, naming the page.
The checks run at these points of the test itself, never from a browser event, so what axe
sees does not depend on timing and no navigation can cut a check short.

axe's source is evaluated through Playwright (the DevTools protocol), which the page's
Content-Security-Policy does not govern, so the app's CSP stays as strict in the tests as in
production. Pages that differ only in their numbers (another course, another date) are one
page state and are checked once per test.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from tests.conftest import REPO_ROOT

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

AXE_SOURCE_PATH = REPO_ROOT / "node_modules" / "axe-core" / "axe.min.js"
FAILING_IMPACTS = ("serious", "critical")
# What makes two documents the same page state: the path with its numbers blanked, and every
# element's tag, classes and own text with their numbers blanked (CSRF tokens and typed values
# live in attributes and properties, which are left out).
FINGERPRINT = """() => {
  const digits = /[0-9]+/g;
  const parts = [location.pathname.replace(digits, "#")];
  for (const el of document.querySelectorAll("body *")) {
    const text = el.children.length ? "" : (el.textContent || "").trim().slice(0, 80);
    parts.push(el.tagName + "." + (el.getAttribute("class") || "") + ":" + text);
  }
  return parts.join("\\n").replace(digits, "#");
}"""
RUN_AXE = """async (impacts) => {
  const results = await axe.run(document, { resultTypes: ["violations"] });
  return results.violations
    .filter(v => impacts.includes(v.impact))
    .map(v => ({
      id: v.id,
      impact: v.impact,
      help: v.help,
      helpUrl: v.helpUrl,
      nodes: v.nodes.map(n => ({ target: n.target.join(" "), summary: n.failureSummary })),
    }));
}"""
MAX_NODES_SHOWN = 8


def axe_source() -> str:
    if not AXE_SOURCE_PATH.exists():
        raise RuntimeError(
            f"{AXE_SOURCE_PATH} is missing: run `make node_modules/.installed` (npm ci) first"
        )
    return AXE_SOURCE_PATH.read_text(encoding="utf-8")


@dataclass
class Finding:
    url: str
    violations: list[dict[str, Any]]

    def report(self) -> str:
        lines = [f"{self.url}:"]
        for violation in self.violations:
            lines.append(
                f"  [{violation['impact']}] {violation['id']}: {violation['help']}"
                f" ({violation['helpUrl']})"
            )
            nodes = violation["nodes"]
            for node in nodes[:MAX_NODES_SHOWN]:
                summary = " ".join(node["summary"].split())
                lines.append(f"      {node['target']} — {summary}")
            if len(nodes) > MAX_NODES_SHOWN:
                lines.append(f"      … and {len(nodes) - MAX_NODES_SHOWN} more")
        return "\n".join(lines)


@dataclass
class AccessibilityAudit:
    """The axe findings of one test's pages."""

    source: str
    findings: list[Finding] = field(default_factory=list)
    _seen: set[str] = field(default_factory=set)
    _visited: set[str] = field(default_factory=set)
    _checked: set[str] = field(default_factory=set)
    _contexts: list[BrowserContext] = field(default_factory=list)

    def watch(self, context: BrowserContext) -> None:
        """Note each document ``context`` loads; check its pages when it closes."""
        self._contexts.append(context)
        context.on("page", self._watch_page)
        close_context = context.close

        def close(**kwargs: Any) -> None:
            for page in context.pages:
                self.check(page)
            close_context(**kwargs)

        context.close = close  # type: ignore[method-assign]

    def _watch_page(self, page: Page) -> None:
        # Bookkeeping only: nothing is asked of the browser from inside its own events.
        page.on("load", lambda: self._visited.add(page_name(page.url)))
        close_page = page.close

        def close(**kwargs: Any) -> None:
            self.check(page)
            close_page(**kwargs)

        page.close = close  # type: ignore[method-assign]

    def check(self, page: Page) -> None:
        """Run axe on ``page`` as it is now, unless this page state was checked already."""
        if page.is_closed() or not page.url.startswith("http"):
            return  # about:blank before the first visit, or already gone
        if page.context not in self._contexts:
            return  # a context not watched (JavaScript off: axe could not run there)
        fingerprint = page.evaluate(FINGERPRINT)
        key = hashlib.sha256(fingerprint.encode()).hexdigest()
        self._checked.add(page_name(page.url))
        if key in self._seen:
            return
        if not page.evaluate("() => typeof window.axe === 'object'"):
            page.evaluate(self.source)
        violations = page.evaluate(RUN_AXE, list(FAILING_IMPACTS))
        self._seen.add(key)
        if violations:
            self.findings.append(Finding(page.url, violations))

    def finish(self) -> None:
        """Check the pages still open at the end of the test."""
        for context in self._contexts:
            try:
                pages = list(context.pages)
            except Exception:  # noqa: BLE001 - a closed context has no pages left to check
                continue
            for page in pages:
                self.check(page)

    def unchecked(self) -> list[str]:
        return sorted(self._visited - self._checked)

    def failed(self) -> bool:
        return bool(self.findings or self.unchecked())

    def report(self) -> str:
        lines = []
        if self.findings:
            count = sum(len(f.violations) for f in self.findings)
            lines.append(f"{count} serious or critical accessibility violation(s) (axe-core):")
            lines.extend(finding.report() for finding in self.findings)
        if self.unchecked():
            lines.append(
                "Pages visited but never checked with axe (take a screenshot of them or call "
                "browser.audit.check(page) while they are shown): " + ", ".join(self.unchecked())
            )
        return "\n".join(lines)


def page_name(url: str) -> str:
    """A page as the audit counts it: its path, numbers blanked (/courses/#)."""
    return re.sub(r"[0-9]+", "#", urlsplit(url).path)


class AuditedBrowser:
    """The session's Chromium, handing out contexts whose pages an audit watches."""

    def __init__(self, browser: Browser, audit: AccessibilityAudit) -> None:
        self._browser = browser
        self.audit = audit
        self._contexts: list[BrowserContext] = []

    def new_context(self, **kwargs: Any) -> BrowserContext:
        context = self._browser.new_context(**kwargs)
        self._contexts.append(context)
        # axe is a script: in a context with JavaScript off, evaluating it never returns. Such
        # contexts show the same markup the other contexts of the tests check with it on.
        if kwargs.get("java_script_enabled", True):
            self.audit.watch(context)
        return context

    def new_page(self, **kwargs: Any) -> Page:
        """A page in a context of its own, closed with the page (like Browser.new_page)."""
        context = self.new_context(**kwargs)
        page = context.new_page()
        close_page = page.close

        def close(**close_kwargs: Any) -> None:
            self.audit.check(page)
            close_page(**close_kwargs)
            context.close()

        page.close = close  # type: ignore[method-assign]
        return page

    def close_contexts(self) -> None:
        for context in self._contexts:
            # Closing twice is harmless; one a test closed already has no pages left to check.
            with contextlib.suppress(Exception):
                context.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._browser, name)
