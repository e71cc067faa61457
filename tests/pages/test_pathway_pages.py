"""The pathway pages: resources on the department admin page, and the course page's Pathway
panel proposing and booking the steps, a room taken in the meantime, and bad input."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, date, datetime

import pytest
import sqlalchemy as sa
import time_machine
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from scheduler.models import AuditEntry, Course, PathwayStep, Resource
from scheduler.services import PathwayOptions
from tests.api.conftest import Seed
from tests.committing import records, services
from tests.pages.conftest import SignIn

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)  # Monday 07:00 in New York
HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')


@pytest.fixture(autouse=True)
def clock() -> Iterator[None]:
    with time_machine.travel(NOW, tick=False):
        yield


def _course(db: Session, seed: Seed, mrn: str) -> int:
    patient = records.create_patient(
        db,
        {"department_id": seed.department_id, "mrn": mrn, "given_name": "Grace",
         "family_name": "Hopper", "date_of_birth": date(1956, 12, 9)},
    )  # fmt: skip
    course = records.create_course(db, {"patient_id": patient.id, "protocol_id": seed.protocol_id})
    return course.id


def _rooms(db: Session, seed: Seed) -> None:
    for kind, name in (("ct_sim", "CT sim"), ("ir_room", "IR 1")):
        records.create_resource(
            db, {"department_id": seed.department_id, "kind": kind, "name": name}
        )


def test_admin_adds_and_edits_a_resource_on_the_department_page(
    client: FlaskClient, signed_in: SignIn, seed: Seed, db: Session
) -> None:
    csrf = signed_in(client, "admin")
    url = f"/admin/departments/{seed.department_id}/resources/new"
    assert client.get(url).status_code == 200
    # Own hours chosen but none given: refused, with the typed name kept.
    refused = client.post(url, data={"csrf_token": csrf, "name": "CT sim", "kind": "ct_sim"})
    assert refused.status_code == 422
    assert 'value="CT sim"' in refused.get_data(as_text=True)
    bad_kind = client.post(
        url, data={"csrf_token": csrf, "name": "MR", "kind": "mri", "department_hours": "on"}
    )
    assert bad_kind.status_code == 422
    saved = client.post(
        url,
        data={"csrf_token": csrf, "name": "CT sim", "kind": "ct_sim", "active": "on",
              "department_hours": "on"},
    )  # fmt: skip
    assert saved.status_code == 302
    page = client.get(f"/admin/departments/{seed.department_id}").get_data(as_text=True)
    assert "CT sim" in page and "CT simulator" in page
    resource = db.scalars(sa.select(Resource)).one()
    assert resource.kind == "ct_sim" and resource.opening_hours is None
    resource_id = resource.id
    db.rollback()
    edited = client.post(
        f"/admin/resources/{resource_id}",
        data={"csrf_token": csrf, "name": "CT sim 1", "active": "on",
              "open_0": "08:00", "close_0": "12:00"},
    )  # fmt: skip
    assert edited.status_code == 302
    db.expire_all()
    assert db.get(Resource, resource_id).opening_hours == {"0": ["08:00", "12:00"]}
    actions = db.scalars(
        sa.select(AuditEntry.action).where(AuditEntry.subject_type == "resource")
    ).all()
    assert actions == ["create", "update"]
    db.rollback()


def test_schedulers_cannot_edit_resources(
    client: FlaskClient, signed_in: SignIn, seed: Seed
) -> None:
    signed_in(client, "scheduler")
    assert client.get(f"/admin/departments/{seed.department_id}/resources/new").status_code == 403


def test_course_page_proposes_and_books_the_pathway(
    client: FlaskClient, signed_in: SignIn, seed: Seed, db: Session
) -> None:
    _rooms(db, seed)
    course_id = _course(db, seed, "PW-1")
    csrf = signed_in(client, "scheduler")
    page = client.get(f"/courses/{course_id}").get_data(as_text=True)
    assert "No pathway booked." in page and f"/courses/{course_id}/pathway" in page

    proposed = client.post(
        f"/courses/{course_id}/pathway/propose",
        data={"csrf_token": csrf, "fiducials": "", "fiducials_minutes": "60",
              "fiducials_days_before_ct": "7", "ct_sim_minutes": "90",
              "planning_working_days": "5"},
    )  # fmt: skip
    html = proposed.get_data(as_text=True)
    assert proposed.status_code == 200, html
    # Liver: markers Monday 2 March, CT Monday 9 March, five working days: 16 March.
    assert "Proposed: ready to treat from 2026-03-16" in html
    assert "Fiducial markers" in html and "IR 1" in html and "Mon 9 Mar 2026 07:00" in html
    book_form = dict(HIDDEN.findall(html.split('id="proposal"')[1]))
    assert {"ct_sim_resource_id", "ct_sim_starts_at", "fiducials_starts_at"} <= set(book_form)

    booked = client.post(f"/courses/{course_id}/pathway/book", data=book_form)
    assert booked.status_code == 302, booked.get_data(as_text=True)
    page = client.get(f"/courses/{course_id}").get_data(as_text=True)
    assert "Ready to treat from <strong>2026-03-16</strong>" in page
    assert db.get(Course, course_id).ready_to_treat_on == date(2026, 3, 16)
    db.rollback()

    # Cancelling frees the rooms; the page says so.
    cancelled = client.post(f"/courses/{course_id}/pathway/cancel", data={"csrf_token": csrf})
    assert cancelled.status_code == 302
    statuses = db.scalars(sa.select(PathwayStep.status)).all()
    assert set(statuses) == {"cancelled"}
    db.rollback()


def test_a_room_taken_since_the_proposal_shows_a_new_one(
    client: FlaskClient, signed_in: SignIn, seed: Seed, db: Session
) -> None:
    _rooms(db, seed)
    course_id = _course(db, seed, "PW-2")
    csrf = signed_in(client, "scheduler")
    proposed = client.post(
        f"/courses/{course_id}/pathway/propose",
        data={"csrf_token": csrf, "fiducials": "no", "fiducials_minutes": "60",
              "fiducials_days_before_ct": "7", "ct_sim_minutes": "60",
              "planning_working_days": "3"},
    )  # fmt: skip
    html = proposed.get_data(as_text=True)
    book_form = dict(HIDDEN.findall(html.split('id="proposal"')[1]))
    # Someone else books the same CT time first.
    other = _course(db, seed, "PW-3")
    services.book_pathway(
        db, other, options=PathwayOptions(fiducials=False, ct_sim_minutes=60), actor_id=None
    )
    taken = client.post(f"/courses/{course_id}/pathway/book", data=book_form)
    text = taken.get_data(as_text=True)
    assert taken.status_code == 409
    assert "Not booked: CT sim is booked" in text
    assert "Mon 2 Mar 2026 08:00" in text  # the next free hour, proposed instead
    assert db.scalar(
        sa.select(sa.func.count()).where(PathwayStep.course_id == course_id)
    ) == 0  # fmt: skip
    db.rollback()


def test_bad_pathway_input_is_shown_and_nothing_is_booked(
    client: FlaskClient, signed_in: SignIn, seed: Seed, db: Session
) -> None:
    course_id = _course(db, seed, "PW-4")
    csrf = signed_in(client, "scheduler")
    base = {"csrf_token": csrf, "fiducials": "no", "fiducials_minutes": "60",
            "fiducials_days_before_ct": "7", "ct_sim_minutes": "90",
            "planning_working_days": "5"}  # fmt: skip
    url = f"/courses/{course_id}/pathway/propose"
    out_of_range = client.post(url, data={**base, "ct_sim_minutes": "30"})
    assert out_of_range.status_code == 422
    assert "must be 60 to 120 minutes" in out_of_range.get_data(as_text=True)
    not_a_number = client.post(url, data={**base, "planning_working_days": "five"})
    assert not_a_number.status_code == 422
    assert "must be a whole number" in not_a_number.get_data(as_text=True)
    # No CT simulator in the department yet.
    no_room = client.post(url, data=base)
    assert no_room.status_code == 422
    assert "no active CT simulator" in no_room.get_data(as_text=True)
    garbled = client.post(
        f"/courses/{course_id}/pathway/book",
        data={**base, "ct_sim_resource_id": "1", "ct_sim_starts_at": "soon"},
    )
    assert garbled.status_code == 422
    assert "propose again" in garbled.get_data(as_text=True)
    assert db.scalar(sa.select(sa.func.count(PathwayStep.id))) == 0
    db.rollback()
