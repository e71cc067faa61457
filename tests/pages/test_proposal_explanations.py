"""The proposals page says why schedules start late, or why there are none."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import time_machine
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from scheduler.models import Department, Protocol
from tests import factories
from tests.api.conftest import Seed
from tests.committing import services
from tests.pages.conftest import SignIn

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)  # Monday, 07:00 in New York


def _course_with_every_linac_down(db: Session, seed: Seed, days: int) -> int:
    department = db.get(Department, seed.department_id)
    protocol = db.get(Protocol, seed.protocol_id)
    assert department is not None and protocol is not None
    course = factories.course(db, factories.patient(db, department), protocol)
    db.commit()
    course_id = course.id
    for linac_id in seed.linac_ids:
        services.add_downtime(
            db, linac_id, starts_at=NOW - timedelta(hours=12), ends_at=NOW + timedelta(days=days),
            kind="planned", reason="upgrade", now=NOW,
        )  # fmt: skip
    db.rollback()
    return course_id


def test_a_late_start_says_which_linacs_are_down(
    client: FlaskClient, signed_in: SignIn, seed: Seed, db: Session
) -> None:
    course_id = _course_with_every_linac_down(db, seed, 21)
    with time_machine.travel(NOW, tick=False):
        signed_in(client, "scheduler")
        page = client.get(f"/courses/{course_id}/propose", query_string={"earliest": "2026-03-02"})
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert 'data-code="linac_downtime"' in html
    assert (
        "Not earlier because: TrueBeam 1 and TrueBeam 2 down 1–23 March (upgrade); "
        "earliest possible start 23 March." in html
    )


def test_no_schedule_for_a_long_downtime_names_it(
    client: FlaskClient, signed_in: SignIn, seed: Seed, db: Session
) -> None:
    course_id = _course_with_every_linac_down(db, seed, 84)
    with time_machine.travel(NOW, tick=False):
        signed_in(client, "scheduler")
        page = client.get(f"/courses/{course_id}/propose", query_string={"earliest": "2026-03-02"})
    html = page.get_data(as_text=True)
    assert "No schedule fits" in html
    assert "TrueBeam 1 and TrueBeam 2 down 1 March–25 May (upgrade)" in html
    assert "capacity" not in html.lower() and "no sbrt-capable linac free" not in html.lower()
