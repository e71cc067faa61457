"""What-if planning in a real browser, with a real Celery worker running the simulations.

An admin copies the department into two small scenarios (four weeks; the second with one more
SBRT linac), runs both, waits on each run's page until it has finished, then compares the two
side by side and finds both runs' figures in the comparison. Every form is driven through its
label, every page is screenshotted after a check that each control has a name, and no page may
log a console error (a Content-Security-Policy violation is one) or fail to load.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy.orm import Session

from config import Settings, load_settings
from scheduler.models import SimulationRun
from scheduler.simulation.report import SUMMARY_GROUPS, format_value
from tests.api.conftest import ADMIN_PASSWORD, seed_reference_data
from tests.browser.test_flows import UNLABELLED, PageWatch, _sign_in
from tests.whatif.worker_process import celery_worker, tail, worker_environment

if TYPE_CHECKING:
    from playwright.sync_api import Page

RUN_TIMEOUT_MS = 90_000


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """The live server's settings, with a broker a separate worker process can share."""
    return load_settings(
        {
            "DATABASE_URL": database_url,
            "BROKER_URL": f"sqla+sqlite:///{tmp_path / 'broker.db'}",
            "SECRET_KEY": "test-secret-key-not-for-production",
            "INSTANCE_DIR": str(tmp_path),
            "SIMULATION_DIR": str(tmp_path / "simulations"),
        }
    )


def _figure(label: str):  # type: ignore[no-untyped-def]
    return next(f for _, figures in SUMMARY_GROUPS for f in figures if f.label == label)


def test_an_admin_compares_two_what_if_runs(
    browser, live_server, session: Session, settings: Settings, screenshot, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    def shot(page: Page, name: str) -> Path:
        assert page.evaluate(UNLABELLED) == [], name
        return screenshot(page, name)

    seed_reference_data(session)
    env = worker_environment(
        database_url=settings.database_url,
        broker_url=settings.broker_url,
        instance_dir=tmp_path,
        simulation_dir=settings.simulations_path,
    )
    log = tmp_path / "worker.log"
    watch = PageWatch()
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
    page = context.new_page()
    watch.attach(page)
    page.set_default_timeout(15_000)
    with celery_worker(env, log) as worker:
        _sign_in(page, live_server.url, "admin@example.org", ADMIN_PASSWORD, shot)
        page.get_by_role("navigation", name="Main").get_by_role("link", name="Admin").click()
        expect(page.get_by_role("navigation", name="Admin")).to_be_visible()
        shot(page, "admin")
        page.get_by_role("navigation", name="Admin").get_by_role("link", name="What-if").click()
        expect(page.get_by_role("heading", name="What-if planning")).to_be_visible()
        shot(page, "whatif-list-empty")

        names = {"As today": {}, "One more SBRT linac": {"linac": "TrueBeam 3"}}
        for name, change in names.items():
            page.get_by_role("link", name="New scenario").click()
            page.get_by_label("Name of this run").fill(name)
            page.get_by_label("Weeks to simulate").fill("4")
            page.get_by_label("Warm-up weeks (simulated, left out of the figures)").fill("1")
            page.get_by_label("New courses a week: liver5").fill("5")
            if change:
                page.get_by_label("Name (leave empty for no new linac)").fill(change["linac"])
                page.get_by_label("SBRT-capable").check()
                page.get_by_label("Beam-matched group (optional)").fill("truebeam")
            shot(page, f"whatif-new-{len(change)}")
            page.get_by_role("button", name="Run").click()
            # The run page refreshes itself until the worker has finished.
            expect(page.locator("#run-status")).to_have_text("Done", timeout=RUN_TIMEOUT_MS)
            assert worker.poll() is None, tail(log)
            expect(page.get_by_role("link", name="Report (charts and figures)")).to_be_visible()
            shot(page, f"whatif-run-{len(change)}")
            page.get_by_role("link", name="All what-if runs").click()

        runs = {run.name: run for run in session.query(SimulationRun).all()}
        for run in runs.values():
            session.expunge(run)  # read later without a transaction holding SQLite's lock
        session.rollback()
        assert {run.status for run in runs.values()} == {"done"}, {
            name: run.error for name, run in runs.items()
        }
        assert len(runs["One more SBRT linac"].scenario["linacs"]) == 3
        page.get_by_label("First run").select_option(label=f"As today (#{runs['As today'].id})")
        page.get_by_label("Second run").select_option(
            label=f"One more SBRT linac (#{runs['One more SBRT linac'].id})"
        )
        page.get_by_role("button", name="Compare").click()
        expect(page.get_by_role("heading", name="Compare what-if runs")).to_be_visible()
        table = page.locator("table.sim-compare")
        expect(table.locator("thead th.sim-run")).to_have_text(["As today", "One more SBRT linac"])
        # Both runs' own figures, as their summaries hold them.
        for label in ("Courses measured", "Use of SBRT linac time"):
            figure = _figure(label)
            expected = [format_value(figure, figure.value(runs[name].summary)) for name in names]
            row = table.locator("tbody tr").filter(
                has=page.get_by_role("rowheader", name=label, exact=True)
            )
            expect(row.locator("td.sim-value")).to_have_text(expected)
        shot(page, "whatif-compare")
    assert watch.problems == []
