"""The move page's one-click alternatives."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import time_machine
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from scheduler.models import Department, Protocol
from scheduler.services import Placement
from scheduler.timeutil import local_to_utc
from tests import factories
from tests.api.conftest import Seed
from tests.committing import services
from tests.pages.conftest import SignIn

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)  # Monday, 07:00 in New York
TZ = "America/New_York"
NO_ALTERNATIVE = "No other time keeps every rule"


def _book(db: Session, seed: Seed, days: list[date]) -> list[int]:
    department = db.get(Department, seed.department_id)
    protocol = db.get(Protocol, seed.protocol_id)
    assert department is not None and protocol is not None
    course = factories.course(db, factories.patient(db, department), protocol)
    db.commit()
    placements = [
        Placement(n, seed.linac_ids[0], local_to_utc(datetime.combine(d, time(10, 0)), TZ))
        for n, d in enumerate(days, start=1)
    ]
    booked = services.book_course(db, course.id, placements, now=NOW)
    ids = [f.id for f in sorted(booked.fractions, key=lambda f: f.number)]
    db.rollback()
    return ids


def test_an_override_move_leaves_the_other_fractions_their_alternatives(
    client: FlaskClient, signed_in: SignIn, seed: Seed, db: Session
) -> None:
    ids = _book(db, seed, [date(2026, 3, 9) + timedelta(days=i) for i in range(5)])
    with time_machine.travel(NOW, tick=False):
        csrf = signed_in(client, "scheduler")
        override = client.post(
            f"/fractions/{ids[4]}/move",
            data={"csrf_token": csrf, "date": "2026-03-20", "time": "10:00",
                  "linac_id": str(seed.linac_ids[0]),
                  "override_reason": "patient travels; agreed by Dr X"},
        )  # fmt: skip
        assert override.status_code == 302, override.get_data(as_text=True)
        for fraction_id in ids[:4]:
            page = client.get(f"/fractions/{fraction_id}/move")
            html = page.get_data(as_text=True)
            assert page.status_code == 200
            assert NO_ALTERNATIVE not in html
            assert "Move to " in html


def test_a_fraction_far_ahead_is_offered_its_own_day_and_not_its_current_time(
    client: FlaskClient, signed_in: SignIn, seed: Seed, db: Session
) -> None:
    ids = _book(db, seed, [date(2026, 5, 11) + timedelta(days=i) for i in range(5)])
    with time_machine.travel(NOW, tick=False):
        signed_in(client, "scheduler")
        html = client.get(f"/fractions/{ids[2]}/move").get_data(as_text=True)
    assert NO_ALTERNATIVE not in html
    current = local_to_utc(datetime(2026, 5, 13, 10, 0), TZ)
    later = current + timedelta(hours=2)
    iso = "%Y-%m-%dT%H:%M:%SZ"
    # One-click forms carry the exact instant of each alternative.
    assert f'name="starts_at" value="{later.strftime(iso)}"' in html
    current_forms = html.count(f'name="starts_at" value="{current.strftime(iso)}"')
    partner = f'name="linac_id" value="{seed.linac_ids[1]}"'
    # The current time appears once: as the beam-matched partner's, not as its own.
    assert current_forms == 1 and partner in html
    # Each says how it differs from the current placement.
    assert "same time, beam-matched machine" in html and "same day, another time" in html
