"""Admin pages: the message template editor, linacs, department, protocols, users and tokens,
and the audit log that records every change. Admin only."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from html import unescape
from zoneinfo import ZoneInfo

import sqlalchemy as sa
import time_machine
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from notifications import rendering, template_store
from notifications.models import MessageTemplate
from scheduler.models import ApiToken, AuditEntry, Closure, Department, Linac, Protocol, User
from tests.api.conftest import ADMIN_PASSWORD, Seed
from tests.committing import records

# The sign-in helper and the cheap password hashing of the message page tests.
from tests.pages.test_messages_pages import _fast_password_hashes, sign_in  # noqa: F401

VALID_SMS = "{{ clinic_sms_name }}: visit {{ first.sms_when }}. {{ link }} Reply C to confirm"


def _count(db: Session, query: sa.Select) -> int:
    value = db.scalar(query)
    db.rollback()  # see sign_in: never hold a transaction while the app runs
    return value


def test_admin_pages_are_admin_only(client: FlaskClient, db: Session, seed: Seed) -> None:
    assert client.get("/admin").status_code == 302  # sign in first
    for role in ("viewer", "scheduler"):
        sign_in(client, db, role)
        for url in (
            "/admin",
            "/admin/linacs",
            "/admin/templates",
            "/admin/audit",
            "/admin/users",
            f"/admin/departments/{seed.department_id}",
        ):
            assert client.get(url).status_code == 403, (role, url)
    sign_in(client, db, "admin")
    for url in (
        "/admin",
        "/admin/linacs",
        "/admin/linacs/new",
        f"/admin/linacs/{seed.linac_ids[0]}",
        "/admin/protocols",
        "/admin/protocols/new",
        f"/admin/protocols/{seed.protocol_id}",
        "/admin/users",
        f"/admin/users/{seed.admin_id}",
        "/admin/audit",
        f"/admin/departments/{seed.department_id}",
        "/admin/templates/change/email_body_html",
        "/admin/templates/cancellation/email_subject",
        "/messages/problems",
    ):
        assert client.get(url).status_code == 200, url
    assert client.get("/admin/linacs/999999").status_code == 404
    assert client.get("/admin/protocols/999999").status_code == 404
    assert client.get("/admin/users/999999").status_code == 404
    assert client.get("/admin/templates/no_such_kind/sms").status_code == 404


def test_template_editor_checks_previews_saves_and_resets(
    client: FlaskClient, db: Session, seed: Seed
) -> None:
    csrf = sign_in(client, db, "admin")
    listing = client.get("/admin/templates").get_data(as_text=True)
    assert "confirmation" in listing and "Email HTML" in listing

    page = client.get("/admin/templates/confirmation/sms").get_data(as_text=True)
    # The shipped source in both languages, previewed on the sample course in both.
    assert "Reply C to confirm" in page and "Responda C para confirmar" in page
    assert "St. Bartholomew&#39;s Clinic: 5 visits booked from Mon 12 Oct" in page
    assert "GSM-7" in page

    shipped_es = template_store.shipped_source("confirmation", "sms", "es")
    url = "/admin/templates/confirmation/sms"

    def post(en: str, action: str = "save"):
        data = {"csrf_token": csrf, "source_en": en, "source_es": shipped_es, "action": action}
        return client.post(url, data=data)

    too_long = post("{{ clinic_sms_name }}: " + "x" * 200)
    assert too_long.status_code == 422
    assert "must fit one 160-character GSM-7 segment" in too_long.get_data(as_text=True)
    diagnosis = post(VALID_SMS + " about your radiation")
    assert diagnosis.status_code == 422
    assert "names a diagnosis or treatment (radiation)" in diagnosis.get_data(as_text=True)
    broken = post("{{ clinic_sms_name }: oops")
    assert broken.status_code == 422 and "does not render" in broken.get_data(as_text=True)
    assert _count(db, sa.select(sa.func.count(MessageTemplate.id))) == 0

    preview = post(VALID_SMS, action="preview")
    html = unescape(preview.get_data(as_text=True))
    assert preview.status_code == 200
    assert "St. Bartholomew's Clinic: visit Mon 12 Oct, 10:45 AM." in html  # edited English
    assert "tiene 5 citas desde el lun 12 oct" in html  # Spanish, as shipped
    assert _count(db, sa.select(sa.func.count(MessageTemplate.id))) == 0  # preview saves nothing

    saved = post(VALID_SMS)
    assert saved.status_code == 302
    overrides = template_store.load_overrides(db)
    db.rollback()
    assert overrides == {"confirmation/sms.en.txt": VALID_SMS}  # Spanish unchanged: not stored
    context = template_store.sample_contexts("confirmation", "sms", "en")[0][1]
    edited = rendering.render("confirmation", "sms", "en", context, overrides=overrides)
    assert edited.text.startswith("St. Bartholomew's Clinic: visit Mon 12 Oct, 10:45 AM.")
    # Other templates still come from the shipped files.
    spanish = rendering.render("confirmation", "sms", "es", context, overrides=overrides)
    assert "Responda C" in spanish.text
    assert "edited" in client.get("/admin/templates").get_data(as_text=True)

    reset = client.post("/admin/templates/confirmation/sms/en/reset", data={"csrf_token": csrf})
    assert reset.status_code == 302
    assert _count(db, sa.select(sa.func.count(MessageTemplate.id))) == 0
    actions = db.scalars(
        sa.select(AuditEntry.action)
        .where(AuditEntry.subject_type == "message_template")
        .order_by(AuditEntry.id)
    ).all()
    db.rollback()
    assert actions == ["update", "reset"]


def test_admin_manages_records_users_and_tokens_and_sees_them_in_the_audit_log(
    client: FlaskClient, db: Session, seed: Seed, now: datetime
) -> None:
    csrf = sign_in(client, db, "admin")

    # A linac with its own Monday hours.
    response = client.post(
        "/admin/linacs/new",
        data={
            "csrf_token": csrf,
            "department_id": seed.department_id,
            "name": "Halcyon 3",
            "capabilities": ["sbrt", "cbct"],
            "beam_group": "halcyon",
            "active": "on",
            "open_0": "07:30",
            "close_0": "18:00",
        },
    )
    assert response.status_code == 302
    linac = db.scalar(sa.select(Linac).where(Linac.name == "Halcyon 3"))
    assert linac is not None
    assert (linac.capabilities, linac.beam_group) == (["cbct", "sbrt"], "halcyon")
    assert linac.opening_hours == {"0": ["07:30", "18:00"]}
    linac_id = linac.id
    db.rollback()
    assert "Halcyon 3" in client.get("/admin/linacs").get_data(as_text=True)

    # A bad protocol: every field error shown, everything typed kept, nothing saved.
    protocol = {
        "csrf_token": csrf,
        "code": "lung3",
        "name": "Lung peripheral 3 fx",
        "site": "lung",
        "fractions": "9",
        "min_hours_between": "40",
        "min_interval_days": "2",
        "max_interval_days": "1",
        "max_overall_days": "14",
        "first_session_minutes": "60",
        "session_minutes": "45",
        "weekdays": ["0", "1", "2", "3", "4"],
        "capabilities": ["sbrt"],
        "active": "on",
        "day_before_reminder_minutes": "1440",
        "same_day_reminder_minutes": "120",
        "prep_instructions": "Bring your inhalers.",
    }
    bad = client.post("/admin/protocols/new", data=protocol)
    html = bad.get_data(as_text=True)
    assert bad.status_code == 422
    assert 'id="err-fractions"' in html and "must be at most 5" in html
    assert 'id="err-max_interval_days"' in html
    assert 'value="Lung peripheral 3 fx"' in html and "Bring your inhalers." in html
    not_a_number = client.post("/admin/protocols/new", data={**protocol, "fractions": "three"})
    assert "must be a whole number" in not_a_number.get_data(as_text=True)
    assert _count(db, sa.select(sa.func.count()).where(Protocol.code == "lung3")) == 0
    good = client.post(
        "/admin/protocols/new",
        data={**protocol, "fractions": "3", "max_interval_days": "", "start_weekdays": ["0"]},
    )
    assert good.status_code == 302
    row = db.scalar(sa.select(Protocol).where(Protocol.code == "lung3"))
    assert (row.fractions, row.min_hours_between, row.start_weekdays) == (3, 40.0, [0])
    protocol_id = row.id
    db.rollback()
    edited = client.post(
        f"/admin/protocols/{protocol_id}",
        data={
            **protocol,
            "fractions": "3",
            "max_interval_days": "",
            "same_day_reminder_minutes": "90",
        },
    )
    assert edited.status_code == 302
    assert (
        _count(db, sa.select(Protocol.same_day_reminder_minutes).where(Protocol.id == protocol_id))
        == 90
    )

    # Department message window and a closure.
    department_url = f"/admin/departments/{seed.department_id}"
    hours = {
        f"{edge}_{d}": t for d in range(5) for edge, t in (("open", "07:00"), ("close", "19:00"))
    }
    settings = {
        "csrf_token": csrf,
        "name": "Demo Radiation Oncology",
        "phone": "",
        "message_window_start": "09:00",
        "message_window_end": "20:00",
        **hours,
    }
    bad_window = client.post(department_url, data={**settings, "message_window_end": "08:00"})
    assert bad_window.status_code == 422 and "must be after the start" in bad_window.get_data(
        as_text=True
    )
    assert client.post(department_url, data=settings).status_code == 302
    window = db.execute(
        sa.select(Department.message_window_start, Department.message_window_end).where(
            Department.id == seed.department_id
        )
    ).one()
    db.rollback()
    assert tuple(window) == ("09:00", "20:00")
    added = client.post(
        f"{department_url}/closures",
        # Ahead of today, or the page would not list it.
        data={
            "csrf_token": csrf,
            "day": str(now.date() + timedelta(days=30)),
            "reason": "Staff training",
        },
    )
    assert added.status_code == 302
    closure_id = _count(db, sa.select(Closure.id))
    assert "Staff training" in client.get(department_url).get_data(as_text=True)
    removed = client.post(f"/admin/closures/{closure_id}/delete", data={"csrf_token": csrf})
    assert removed.status_code == 302
    assert _count(db, sa.select(sa.func.count(Closure.id))) == 0

    # A new user, a role change, a token shown once, then revoked.
    created = client.post(
        "/admin/users",
        data={
            "csrf_token": csrf,
            "name": "Nurse Ratched",
            "email": "nurse@example.org",
            "role": "viewer",
            "password": ADMIN_PASSWORD,
        },
    )
    assert created.status_code == 302
    user_id = _count(db, sa.select(User.id).where(User.email == "nurse@example.org"))
    changed = client.post(
        f"/admin/users/{user_id}",
        data={"csrf_token": csrf, "name": "Nurse Ratched", "role": "scheduler", "active": "on"},
    )
    assert changed.status_code == 302
    assert _count(db, sa.select(User.role).where(User.id == user_id)) == "scheduler"
    own = client.post(
        f"/admin/users/{seed.admin_id}",
        data={"csrf_token": csrf, "name": "Admin", "role": "viewer", "active": "on"},
    )
    assert own.status_code == 422 and "cannot change your own role" in own.get_data(as_text=True)

    issued = client.post(
        f"/admin/users/{user_id}/tokens", data={"csrf_token": csrf, "token_name": "EHR feed"}
    )
    assert issued.status_code == 201 and issued.headers["Cache-Control"] == "no-store"
    token = re.search(r'value="(sbrt_[^"]+)"', issued.get_data(as_text=True)).group(1)
    me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200 and me.json["id"] == user_id
    assert token not in client.get(f"/admin/users/{user_id}").get_data(as_text=True)  # once
    token_id = _count(db, sa.select(ApiToken.id).where(ApiToken.name == "EHR feed"))
    revoked = client.post(f"/admin/tokens/{token_id}/revoke", data={"csrf_token": csrf})
    assert revoked.status_code == 302
    me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 401

    # Every change is in the audit log, newest first, with who made it.
    entries = db.execute(
        sa.select(AuditEntry.action, AuditEntry.subject_type, AuditEntry.subject_id)
    ).all()
    db.rollback()
    recorded = {(a, t, i) for a, t, i in entries}
    for expected in (
        ("create", "linac", linac_id),
        ("create", "protocol", protocol_id),
        ("update", "protocol", protocol_id),
        ("update", "department", seed.department_id),
        ("create", "closure", closure_id),
        ("delete", "closure", closure_id),
        ("create", "user", user_id),
        ("update", "user", user_id),
        ("create", "api_token", token_id),
        ("revoke", "api_token", token_id),
    ):
        assert expected in recorded, expected
    log = client.get("/admin/audit").get_data(as_text=True)
    assert "api_token" in log and "revoke" in log and "Admin" in log
    assert "role: viewer -&gt; scheduler" in log
    assert client.get("/admin/audit?page=2").status_code == 200


def test_department_page_lists_closures_from_the_departments_today(
    client: FlaskClient, db: Session, seed: Seed
) -> None:
    records.add_closure(db, seed.department_id, day=date(2026, 12, 30), reason="Fire drill")
    records.add_closure(db, seed.department_id, day=date(2026, 12, 31), reason="Year-end stock")
    db.commit()
    # 22:30 on 31 December in New York, with the server's own zone UTC: there it is already
    # 1 January, but the department's closure of the 31st is today's and still ahead.
    late = datetime(2026, 12, 31, 22, 30, tzinfo=ZoneInfo("America/New_York"))
    with time_machine.travel(late.astimezone(ZoneInfo("UTC")), tick=False):
        sign_in(client, db, "admin")
        html = client.get(f"/admin/departments/{seed.department_id}").get_data(as_text=True)
    assert "Year-end stock" in html
    assert "Fire drill" not in html
