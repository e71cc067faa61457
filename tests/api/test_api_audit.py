"""Every API operation that changes state or answers with patient data leaves exactly one audit
entry, written in the action's own transaction: when that transaction fails, neither the change
nor the entry is stored.

The operations come from the registry, so a new one is covered the moment it is declared: it
fails here until it has an example request below.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient
from sqlalchemy import event
from sqlalchemy.orm import Session

from scheduler.models import AuditEntry, Base, Course, CourseStatus, User
from scheduler.services import PathwayOptions, Placement
from scheduler.timeutil import local_to_utc
from tests.api.conftest import Seed
from tests.committing import records, services
from web.api import load_operations
from web.api.registry import Operation, routes

TZ = "America/New_York"
PHONE = "+14155552671"
GIVEN, FAMILY = "Audita", "Quietfield"


@dataclass(frozen=True)
class World:
    patient_id: int
    draft_course_id: int
    draft_placements: list[dict]
    past_course_id: int
    past_fraction_ids: list[int]  # fractions 1..5, all started before now
    future_course_id: int  # booked ahead, fraction 5 cancelled (so it can be rebooked)
    future_fraction_ids: list[int]
    rebooking_placements: list[dict]
    closure_id: int
    downtime_id: int
    token_id: int
    viewer_id: int


def _post(client: FlaskClient, seed: Seed, url: str, body: dict) -> dict:
    response = client.post(url, json=body, headers=seed.auth())
    assert response.status_code in (200, 201), response.json
    return response.json


def _book_directly(
    db: Session, seed: Seed, course_id: int, days: list[date], *, now: datetime
) -> list[int]:
    placements = [
        Placement(n, seed.linac_ids[0], local_to_utc(datetime.combine(d, time(10, 0)), TZ))
        for n, d in enumerate(days, start=1)
    ]
    booked = services.book_course(db, course_id, placements, now=now)
    return [f.id for f in sorted(booked.fractions, key=lambda f: f.number)]


def _proposed(client: FlaskClient, seed: Seed, course_id: int, earliest: datetime) -> list[dict]:
    proposal = _post(
        client,
        seed,
        f"/api/v1/courses/{course_id}/proposals",
        {"count": 1, "earliest": earliest.date().isoformat()},
    )
    return [
        {"number": f["number"], "linac_id": f["linac_id"], "starts_at": f["starts_at"]}
        for f in proposal["schedules"][0]["fractions"]
    ]


def _course(client: FlaskClient, seed: Seed, patient_id: int) -> int:
    body = {"patient_id": patient_id, "protocol_id": seed.protocol_id}
    return _post(client, seed, "/api/v1/courses", body)["id"]


@pytest.fixture
def world(client: FlaskClient, seed: Seed, db: Session) -> World:
    patient = _post(
        client,
        seed,
        "/api/v1/patients",
        {"department_id": seed.department_id, "mrn": "AUD-1", "given_name": GIVEN,
         "family_name": FAMILY, "date_of_birth": "1959-06-30", "phone": PHONE,
         "sms_consent": True},
    )  # fmt: skip
    now = datetime.now(UTC)
    # A course booked three weeks ago, Monday to Friday: every fraction has started.
    past_monday = (now - timedelta(days=21)).date()
    past_monday -= timedelta(days=past_monday.weekday())
    past_course = _course(client, seed, patient["id"])
    past_ids = _book_directly(
        db,
        seed,
        past_course,
        [past_monday + timedelta(days=i) for i in range(5)],
        now=datetime.combine(past_monday - timedelta(days=3), time(12, 0), UTC),
    )
    # Monday, Wednesday, Friday, Monday, Wednesday, four weeks ahead; the last fraction is
    # cancelled, so the course can be rebooked on the Tuesday to Thursday after the fourth.
    future_monday = (now + timedelta(days=28)).date()
    future_monday += timedelta(days=7 - future_monday.weekday())
    future_course = _course(client, seed, patient["id"])
    future_ids = _book_directly(
        db,
        seed,
        future_course,
        [future_monday + timedelta(days=d) for d in (0, 2, 4, 7, 9)],
        now=now,
    )
    services.cancel_fraction(db, future_ids[4], reason="test")
    tuesday = datetime.combine(future_monday + timedelta(days=8), time(10, 0))
    rebooking_placements = [
        {"number": 5, "linac_id": seed.linac_ids[0], "starts_at": tuesday.isoformat()}
    ]
    # A draft course and a schedule proposed for it (ten weeks ahead, clear of the others).
    draft_course = _course(client, seed, patient["id"])
    draft_placements = _proposed(client, seed, draft_course, now + timedelta(days=70))
    closure = _post(
        client,
        seed,
        f"/api/v1/departments/{seed.department_id}/closures",
        {"day": (now + timedelta(days=200)).date().isoformat(), "reason": "Inventory"},
    )
    far = (now + timedelta(days=300)).date()
    downtime = _post(
        client,
        seed,
        f"/api/v1/linacs/{seed.linac_ids[1]}/downtimes",
        {"starts_at": f"{far.isoformat()}T02:00:00", "ends_at": f"{far.isoformat()}T03:00:00",
         "kind": "planned", "reason": "Service"},
    )  # fmt: skip
    viewer_id = db.scalar(sa.select(User.id).where(User.email == "viewer@example.org"))
    assert viewer_id is not None
    db.rollback()  # end the read: on SQLite it would hold the lock the app needs
    token = _post(client, seed, f"/api/v1/users/{viewer_id}/tokens", {"name": "spare"})
    return World(
        patient_id=patient["id"],
        draft_course_id=draft_course,
        draft_placements=draft_placements,
        past_course_id=past_course,
        past_fraction_ids=past_ids,
        future_course_id=future_course,
        future_fraction_ids=future_ids,
        rebooking_placements=rebooking_placements,
        closure_id=closure["id"],
        downtime_id=downtime["downtime_id"],
        token_id=token["id"],
        viewer_id=viewer_id,
    )


Request = tuple[str, dict[str, Any] | None, dict[str, Any] | None]  # url, json, query


def _undo_missed(_seed: Seed, w: World, db: Session) -> Request:
    services.record_missed(db, w.past_fraction_ids[2], reason="unwell")
    return f"/api/v1/fractions/{w.past_fraction_ids[2]}/missed/undo", None, None


def _flagged_for_review(_seed: Seed, w: World, db: Session) -> Request:
    db.execute(
        sa.update(Course)
        .where(Course.id == w.future_course_id)
        .values(status=CourseStatus.NEEDS_REVIEW)
    )
    db.commit()
    return f"/api/v1/courses/{w.future_course_id}/reviewed", {}, None


def _ct_sim(db: Session, seed: Seed) -> int:
    resource = records.create_resource(
        db, {"department_id": seed.department_id, "kind": "ct_sim", "name": "CT sim"}
    )
    return resource.id


def _pathway_proposal(seed: Seed, w: World, db: Session) -> Request:
    _ct_sim(db, seed)
    body = {"fiducials": False, "ct_sim_minutes": 60}
    return f"/api/v1/courses/{w.draft_course_id}/pathway/proposals", body, None


def _pathway_booking(seed: Seed, w: World, db: Session) -> Request:
    _ct_sim(db, seed)
    body = {"fiducials": False, "planning_working_days": 3}
    return f"/api/v1/courses/{w.draft_course_id}/pathway", body, None


def _booked_pathway(seed: Seed, w: World, db: Session) -> Request:
    _ct_sim(db, seed)
    services.book_pathway(db, w.draft_course_id, options=PathwayOptions(fiducials=False))
    return f"/api/v1/courses/{w.draft_course_id}/pathway/cancel", None, None


# One valid request per audited operation, by operation id. ``db`` lets an example prepare
# what its request needs (committed, like any earlier request would have).
EXAMPLES: dict[str, Callable[[Seed, World, Session], Request]] = {
    "create_user": lambda s, w, db: (
        "/api/v1/users",
        {"email": "new@example.org", "name": "New", "role": "viewer"},
        None,
    ),
    "update_user": lambda s, w, db: (f"/api/v1/users/{w.viewer_id}", {"role": "scheduler"}, None),
    "create_token": lambda s, w, db: (f"/api/v1/users/{w.viewer_id}/tokens", {"name": "t"}, None),
    "revoke_token": lambda s, w, db: (f"/api/v1/tokens/{w.token_id}/revoke", None, None),
    "list_courses": lambda s, w, db: ("/api/v1/courses", None, {"patient_id": w.patient_id}),
    "create_course": lambda s, w, db: (
        "/api/v1/courses",
        {"patient_id": w.patient_id, "protocol_id": s.protocol_id},
        None,
    ),
    "get_course": lambda s, w, db: (f"/api/v1/courses/{w.past_course_id}", None, None),
    "update_course": lambda s, w, db: (
        f"/api/v1/courses/{w.draft_course_id}",
        {"priority": 1},
        None,
    ),
    "propose_schedules": lambda s, w, db: (
        f"/api/v1/courses/{w.draft_course_id}/proposals",
        {"count": 1},
        None,
    ),
    "book_course": lambda s, w, db: (
        f"/api/v1/courses/{w.draft_course_id}/booking",
        {"fractions": w.draft_placements},
        None,
    ),
    "record_readiness": lambda s, w, db: (
        f"/api/v1/courses/{w.future_course_id}/readiness/physics_qa",
        {"done_at": "2026-01-05T09:00:00Z"},
        None,
    ),
    "cancel_course": lambda s, w, db: (
        f"/api/v1/courses/{w.future_course_id}/cancel",
        {"reason": "plan changed"},
        None,
    ),
    "propose_rebooking": lambda s, w, db: (
        f"/api/v1/courses/{w.future_course_id}/rebooking/proposals",
        {"count": 1},
        None,
    ),
    "rebook_fractions": lambda s, w, db: (
        f"/api/v1/courses/{w.future_course_id}/rebooking",
        {"fractions": w.rebooking_placements},
        None,
    ),
    "change_prescription": lambda s, w, db: (
        f"/api/v1/courses/{w.future_course_id}/prescription",
        {"fractions": 4, "reason": "clinician decided"},
        None,
    ),
    "list_fractions": lambda s, w, db: (
        "/api/v1/fractions",
        None,
        {
            "linac_id": s.linac_ids[0],
            "start": _iso(datetime.now(UTC)),
            "end": _iso(datetime.now(UTC) + timedelta(days=60)),
        },
    ),  # fmt: skip
    "get_fraction": lambda s, w, db: (f"/api/v1/fractions/{w.future_fraction_ids[0]}", None, None),
    "fraction_alternatives": lambda s, w, db: (
        f"/api/v1/fractions/{w.future_fraction_ids[0]}/alternatives",
        None,
        None,
    ),
    "move_fraction": lambda s, w, db: (
        f"/api/v1/fractions/{w.future_fraction_ids[0]}/move",
        {"linac_id": s.linac_ids[1], "starts_at": _fraction_start(db, w.future_fraction_ids[0])},
        None,
    ),
    "cancel_fraction": lambda s, w, db: (
        f"/api/v1/fractions/{w.future_fraction_ids[3]}/cancel",
        {"reason": "unwell"},
        None,
    ),
    "record_missed": lambda s, w, db: (
        f"/api/v1/fractions/{w.past_fraction_ids[0]}/missed",
        {"reason": "unwell"},
        None,
    ),
    "undo_missed": _undo_missed,
    "record_completed": lambda s, w, db: (
        f"/api/v1/fractions/{w.past_fraction_ids[1]}/completed",
        None,
        None,
    ),
    "add_downtime": lambda s, w, db: (
        f"/api/v1/linacs/{s.linac_ids[1]}/downtimes",
        {"starts_at": "2099-01-05T02:00:00", "ends_at": "2099-01-05T03:00:00", "reason": "QA"},
        None,
    ),
    "update_downtime": lambda s, w, db: (
        f"/api/v1/downtimes/{w.downtime_id}",
        {"reason": "Longer service"},
        None,
    ),
    "delete_downtime": lambda s, w, db: (f"/api/v1/downtimes/{w.downtime_id}", None, None),
    "create_department": lambda s, w, db: (
        "/api/v1/departments",
        {"name": "Second site", "timezone": "America/Chicago"},
        None,
    ),
    "update_department": lambda s, w, db: (
        f"/api/v1/departments/{s.department_id}",
        {"name": "Renamed site"},
        None,
    ),
    "add_closure": lambda s, w, db: (
        f"/api/v1/departments/{s.department_id}/closures",
        {"day": "2099-07-04", "reason": "Holiday"},
        None,
    ),
    "remove_closure": lambda s, w, db: (f"/api/v1/closures/{w.closure_id}", None, None),
    "set_physicist_roster": lambda s, w, db: (
        f"/api/v1/departments/{s.department_id}/physicist-roster",
        {"blocks": [{"weekday": 0, "start": "08:00", "end": "17:00", "physicists": 2}]},
        None,
    ),
    "create_linac": lambda s, w, db: (
        "/api/v1/linacs",
        {"department_id": s.department_id, "name": "Halcyon"},
        None,
    ),
    "update_linac": lambda s, w, db: (f"/api/v1/linacs/{s.linac_ids[1]}", {"name": "TB2"}, None),
    "create_protocol": lambda s, w, db: (
        "/api/v1/protocols",
        {
            "code": "lung3",
            "name": "Lung 3 fx",
            "site": "lung",
            "fractions": 3,
            "min_interval_days": 1,
            "max_interval_days": 4,
            "min_overall_days": 3,
            "max_overall_days": 14,
        },
        None,
    ),  # fmt: skip
    "update_protocol": lambda s, w, db: (
        f"/api/v1/protocols/{s.protocol_id}",
        {"name": "Liver five"},
        None,
    ),
    "list_patients": lambda s, w, db: ("/api/v1/patients", None, None),
    "search_patients": lambda s, w, db: ("/api/v1/patients/search", {"query": "AUD"}, None),
    "create_patient": lambda s, w, db: (
        "/api/v1/patients",
        {
            "department_id": s.department_id,
            "mrn": "AUD-2",
            "given_name": "Other",
            "family_name": "Person",
            "date_of_birth": "1970-01-01",
        },
        None,
    ),  # fmt: skip
    "get_patient": lambda s, w, db: (f"/api/v1/patients/{w.patient_id}", None, None),
    "mark_reviewed": _flagged_for_review,
    "send_fresh_link": lambda s, w, db: (
        f"/api/v1/courses/{w.future_course_id}/fresh-link",
        None,
        None,
    ),
    "revoke_patient_links": lambda s, w, db: (
        f"/api/v1/patients/{w.patient_id}/links/revoke",
        None,
        None,
    ),
    "list_course_messages": lambda s, w, db: (
        f"/api/v1/courses/{w.future_course_id}/messages",
        None,
        None,
    ),
    "create_resource": lambda s, w, db: (
        "/api/v1/resources",
        {"department_id": s.department_id, "kind": "ir_room", "name": "IR 1"},
        None,
    ),
    "update_resource": lambda s, w, db: (
        f"/api/v1/resources/{_ct_sim(db, s)}",
        {"opening_hours": {"0": ["08:00", "12:00"]}},
        None,
    ),
    "propose_pathway": _pathway_proposal,
    "book_pathway": _pathway_booking,
    "cancel_pathway": _booked_pathway,
    "update_patient": lambda s, w, db: (
        f"/api/v1/patients/{w.patient_id}",
        {"family_name": "Quietfield-Smith"},
        None,
    ),
}


def _iso(instant: datetime) -> str:
    return instant.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _fraction_start(db: Session, fraction_id: int) -> str:
    from scheduler.models import Fraction

    fraction = db.get(Fraction, fraction_id)
    assert fraction is not None
    starts_at = fraction.starts_at
    db.rollback()
    return starts_at.astimezone(UTC).isoformat().replace("+00:00", "Z")


load_operations()
AUDITED = [
    op for op in routes.operations if op.audit is not None or op.changes_state or op.reads_phi
]


def test_the_registry_refuses_an_unaudited_write() -> None:
    with pytest.raises(TypeError, match="audit"):
        routes.operation("POST", "/nothing", summary="x", tag="x", role="admin")(lambda: None)
    assert all(op.audit is not None for op in AUDITED)


def test_every_audited_operation_has_an_example() -> None:
    assert sorted(op.operation_id for op in AUDITED) == sorted(EXAMPLES)


def _snapshot(db: Session) -> dict[str, list[tuple]]:
    """Every row of every table: what a failed action must leave exactly as it was."""
    rows = {
        table.name: sorted(map(tuple, db.execute(sa.select(table)).all()), key=repr)
        for table in Base.metadata.sorted_tables
    }
    db.rollback()
    return rows


class CommitFailure(RuntimeError):
    """Raised by the test in place of a failing database commit."""


@pytest.fixture
def failing_audited_commits() -> Iterator[dict[str, bool]]:
    """While ``armed``, a commit that would store an audit entry fails after everything the
    action wrote (the change and the entry) has been flushed to the database."""
    state = {"armed": False, "failed": False}

    def note_audit(session: Session, _context: object, _instances: object) -> None:
        if any(isinstance(row, AuditEntry) for row in session.new):
            session.info["writes_audit"] = True

    def fail(session: Session) -> None:
        session.flush()
        if state["armed"] and session.info.pop("writes_audit", False):
            state["failed"] = True
            raise CommitFailure("the database refused the commit")

    def forget(session: Session) -> None:
        session.info.pop("writes_audit", None)

    event.listen(Session, "before_flush", note_audit)
    event.listen(Session, "before_commit", fail)
    event.listen(Session, "after_rollback", forget)
    try:
        yield state
    finally:
        event.remove(Session, "before_flush", note_audit)
        event.remove(Session, "before_commit", fail)
        event.remove(Session, "after_rollback", forget)


def _send(client: FlaskClient, seed: Seed, op: Operation, request: Request) -> tuple[int, Any]:
    url, body, query = request
    role = "admin" if op.role == "admin" else "scheduler"
    try:
        response = client.open(
            url, method=op.method, json=body, query_string=query, headers=seed.auth(role)
        )
    except CommitFailure:
        return 500, None
    return response.status_code, response.json


@pytest.mark.parametrize("op", AUDITED, ids=lambda op: op.operation_id)
def test_an_operation_and_its_audit_entry_are_stored_together(
    op: Operation,
    client: FlaskClient,
    seed: Seed,
    world: World,
    db: Session,
    failing_audited_commits: dict[str, bool],
) -> None:
    request = EXAMPLES[op.operation_id](seed, world, db)
    before = _snapshot(db)

    failing_audited_commits["armed"] = True
    status, answer = _send(client, seed, op, request)
    failing_audited_commits["armed"] = False
    assert failing_audited_commits["failed"], (
        f"{op.operation_id} wrote no audit entry ({status} {answer})"
    )
    assert status == 500
    assert _snapshot(db) == before, "a failed action left its change or its audit entry"

    status, answer = _send(client, seed, op, request)
    assert 200 <= status < 300, answer
    after = _snapshot(db)
    new_entries = [row for row in after["audit_log"] if row not in before["audit_log"]]
    assert len(new_entries) == 1, new_entries
    entry = db.scalars(sa.select(AuditEntry).order_by(AuditEntry.id.desc()).limit(1)).one()
    assert entry.action == op.audit.action and entry.subject_type == op.audit.subject
    assert entry.detail["via"] == "api"
    assert entry.actor_id == db.scalar(
        sa.select(User.id).where(
            User.email == f"{'admin' if op.role == 'admin' else 'scheduler'}@example.org"
        )
    )
    assert entry.subject_id is not None or entry.detail.get("ids"), entry.detail
    # Ids only: never the patient's name, phone number or anything typed.
    text = repr(entry.detail)
    for secret in (GIVEN, FAMILY, PHONE, "AUD-"):
        assert secret not in text
    db.rollback()
