"""Accessibility of every page, checked with axe-core in a real browser.

The audit itself is shown to catch a violation and an unchecked page; then an admin opens
every staff page reachable from the navigation (following links page by page, one page of
each kind), the template editor showing its problems, the API docs and a patient's link page,
each checked by the `browser` fixture's audit (tests/browser/accessibility.py). The API docs
must render their operations with no Content-Security-Policy violation.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import urljoin, urlsplit

import pytest
import sqlalchemy as sa

from scheduler.demo import seed_demo
from scheduler.links import issue_patient_link, patient_link_url
from scheduler.models import Course
from tests.browser.accessibility import AccessibilityAudit, page_name
from tests.browser.test_flows import PageWatch, _sign_in

if TYPE_CHECKING:
    from playwright.sync_api import Page

# Links the crawl does not follow: signing out ends the visit; the patient pages are opened
# with a real token below; the API's JSON and downloads are not pages.
SKIPPED_PREFIXES = ("/logout", "/p/", "/api/v1/", "/api/openapi.json", "/static/", "/feeds/")
MAX_PAGES = 150
# Every CSP violation, reported by the document itself (init scripts run before the page's own
# and are not subject to its CSP).
COLLECT_CSP_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolations.push(
    `${event.violatedDirective} blocked ${event.blockedURI || "inline"}` +
      ` (${event.sourceFile}:${event.lineNumber})`
  );
});
"""
BAD_PAGE = """<!doctype html><html lang="en"><head><title>Bad</title></head><body><main>
<h1>Bad page</h1><img src="data:," id="no-alt"><p><input id="no-label"></p></main></body></html>
"""


def test_the_audit_fails_a_page_with_violations_and_a_page_left_unchecked(
    chromium, axe_script: str
) -> None:
    audit = AccessibilityAudit(axe_script)
    context = chromium.new_context()
    audit.watch(context)
    page = context.new_page()
    context.route(
        "http://a11y.invalid/**",
        lambda route: route.fulfill(status=200, content_type="text/html", body=BAD_PAGE),
    )
    page.goto("http://a11y.invalid/bad/1")
    page.goto("http://a11y.invalid/never-checked")
    assert audit.unchecked() == ["/bad/#", "/never-checked"]
    page.goto("http://a11y.invalid/bad/2")
    audit.check(page)
    context.close()  # checks the page shown; /never-checked was left unchecked for good
    assert audit.unchecked() == ["/never-checked"]
    assert audit.failed()
    rules = {v["id"]: v for finding in audit.findings for v in finding.violations}
    assert {"image-alt", "label"} <= set(rules), sorted(rules)
    assert rules["image-alt"]["nodes"][0]["target"] == "#no-alt"
    report = audit.report()
    assert "[critical] image-alt" in report and "#no-label" in report, report
    assert "/never-checked" in report


def test_the_api_docs_render_under_the_apps_csp(browser, live_server) -> None:
    from playwright.sync_api import expect

    watch = PageWatch()
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
    context.add_init_script(COLLECT_CSP_VIOLATIONS)
    page = context.new_page()
    watch.attach(page)
    page.goto(f"{live_server.url}/api/docs")
    booking = page.locator(".opblock-summary-path", has_text="/courses/{course_id}/booking")
    expect(booking.first).to_be_visible(timeout=15_000)
    assert page.locator(".opblock").count() > 20
    # Opening an operation shows its parameters and responses.
    booking.first.click()
    expect(page.locator(".opblock.is-open .responses-wrapper").first).to_be_visible()
    browser.audit.check(page)
    assert page.evaluate("window.__cspViolations") == []
    spec = context.request.get(f"{live_server.url}/api/openapi.json")
    assert spec.ok and spec.json()["openapi"].startswith("3.1")
    context.close()
    assert watch.problems == []


def _same_site_links(page: Page, base: str) -> list[str]:
    hrefs = page.eval_on_selector_all("a[href]", "links => links.map(a => a.getAttribute('href'))")
    found = []
    for href in hrefs:
        url = urljoin(page.url, href).split("#", 1)[0]
        parts = urlsplit(url)
        if f"{parts.scheme}://{parts.netloc}" != base or parts.path.startswith(SKIPPED_PREFIXES):
            continue
        found.append(url)
    return found


def _is_page(context, url: str) -> bool:  # type: ignore[no-untyped-def]
    """An HTML page answered 200 (not a CSV or calendar download)."""
    response = context.request.get(url)
    return response.status == 200 and response.headers.get("content-type", "").startswith(
        "text/html"
    )


# Page structure does not change with the date or the database: one run, on the real clock.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_every_staff_page_and_the_patient_page_pass_axe(
    browser, live_server, session, settings, now
) -> None:
    shown = seed_demo(session, settings, now=now)
    email, password = shown["login (admin)"].split(" / ")
    watch = PageWatch()
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
    page = context.new_page()
    watch.attach(page)
    page.set_default_timeout(15_000)
    _sign_in(page, live_server.url, email, password, lambda shown, _: browser.audit.check(shown))

    # Breadth first from the start page and one course and patient of the demo (the calendar
    # of this week may be empty): one page of each kind (its path, numbers aside).
    course_id, patient_id = session.execute(
        sa.select(Course.id, Course.patient_id).order_by(Course.id).limit(1)
    ).one()
    session.rollback()  # end the read: on SQLite it would hold the lock the pages write under
    queue = [
        page.url,
        f"{live_server.url}/courses/{course_id}",
        f"{live_server.url}/patients/{patient_id}",
    ]
    kinds: set[str] = set()
    visited = []
    while queue and len(visited) < MAX_PAGES:
        url = queue.pop(0)
        kind = page_name(url)
        if kind in kinds:
            continue
        kinds.add(kind)
        if not _is_page(context, url):
            continue
        page.goto(url)
        browser.audit.check(page)
        visited.append(kind)
        queue.extend(_same_site_links(page, live_server.url))
    assert len(visited) < MAX_PAGES, "the crawl stopped early: raise MAX_PAGES"
    print(f"{len(visited)} kinds of page checked:", " ".join(visited))
    for expected in ("/", "/calendar/week", "/patients", "/courses/#", "/admin/templates"):
        assert expected in visited, visited

    # The template editor showing its problem list (a word SMS may not carry).
    page.goto(f"{live_server.url}/admin/templates")
    page.locator("a[href*='/sms']").first.click()
    page.get_by_label("Template source (en)").fill("Your cancer treatment is {{ when }}")
    with page.expect_navigation():
        page.get_by_role("button", name="Preview").click()
    assert page.locator("ul.template-problems li").count() > 0
    browser.audit.check(page)
    context.close()

    # The patient's page, from a link as their messages carry it, on a phone.
    token = issue_patient_link(
        session, patient_id=patient_id, course_id=course_id, now=datetime.now(UTC)
    )
    session.commit()
    phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    mobile = phone.new_page()
    watch.attach(mobile)
    mobile.goto(patient_link_url(live_server.url, token))
    browser.audit.check(mobile)
    phone.close()
    assert watch.problems == []
