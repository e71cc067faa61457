"""Bad input the pages once answered with a server error: each is now a 400 or 404 with a readable
page in the site's layout, and nothing stored changes."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from notifications.models import MessageTemplate, Reminder
from scheduler.models import CalendarFeed, Closure, Course, Downtime, Linac, Patient, User
from tests.api.conftest import ADMIN_PASSWORD, Seed
from tests.pages.conftest import SignIn, csrf_from
from tests.pages.test_fuzz_pages import World, seed_world
from web.params import MAX_ID

BRAND = 'class="brand"'  # the site's layout, not a bare server error page


@pytest.fixture
def world(db: Session, seed: Seed) -> World:
    return seed_world(db, seed)


def _count(db: Session, model: type) -> int:
    db.rollback()
    count = db.scalar(sa.select(sa.func.count()).select_from(model))
    db.rollback()  # SQLite: release the write lock the app's requests need
    return count or 0


def _stored(db: Session, world: World) -> tuple[object, ...]:
    """What the NUL forms would change: users, feeds, templates, the course and the reminder."""
    db.rollback()
    state = (
        *(db.scalar(sa.select(sa.func.count()).select_from(m)) for m in (User, CalendarFeed)),
        db.scalar(sa.select(sa.func.count()).select_from(MessageTemplate)),
        db.scalar(sa.select(Course.status).where(Course.id == world.ids["course_id"])),
        db.scalar(sa.select(Reminder.status).where(Reminder.id == world.ids["reminder_id"])),
    )
    db.rollback()
    return state


def _readable(response, status: int, *words: str) -> str:  # noqa: ANN001 - a test response
    html = response.get_data(as_text=True)
    assert response.status_code == status, html[:2000]
    assert "text/html" in response.content_type
    assert BRAND in html
    for word in words:
        assert word in html, html[:2000]
    return html


# (path template, the field that carries a NUL, the other fields): forms whose values reached
# the database unchecked, where PostgreSQL refuses a NUL in text.
NUL_FORMS = [
    ("/patients", "q", {}),
    ("/admin/users", "email", {"name": "New", "role": "viewer"}),
    ("/admin/users", "password", {"email": "new@example.org", "name": "New", "role": "viewer"}),
    ("/admin/templates/day_before/sms", "source_en", {"action": "save"}),
    ("/courses/{course_id}/cancel", "reason", {"confirm": "yes"}),
    ("/messages/{reminder_id}/suppress", "reason", {}),
    ("/admin/linacs/{linac_id}/feeds", "feed_name", {}),
]


@pytest.mark.parametrize(("path", "field", "others"), NUL_FORMS)
def test_nul_in_a_form_field_is_a_400_and_stores_nothing(
    client: FlaskClient,
    db: Session,
    world: World,
    signed_in: SignIn,
    path: str,
    field: str,
    others: dict[str, str],
) -> None:
    csrf = signed_in(client, "admin")
    before = _stored(db, world)
    data = {"csrf_token": csrf, **others, field: "Ana\x00Lopez"}
    response = client.post(path.format(**world.ids), data=data)
    _readable(response, 400, "control character")
    assert _stored(db, world) == before


def test_nul_in_the_sign_in_email_is_a_400(client: FlaskClient, seed: Seed) -> None:
    csrf = csrf_from(client.get("/login").get_data(as_text=True))
    response = client.post(
        "/login", data={"csrf_token": csrf, "email": "admin\x00@example.org", "password": "x"}
    )
    _readable(response, 400, "control character")


@pytest.mark.parametrize("value", ["9999-12-31", "0001-01-01"])
def test_week_start_and_day_date_beyond_the_horizon(
    client: FlaskClient, world: World, signed_in: SignIn, value: str
) -> None:
    signed_in(client, "viewer")
    _readable(client.get("/calendar/week", query_string={"start": value}), 400, "start")
    _readable(client.get("/calendar/day", query_string={"date": value}), 400, "date")
    linac_week = f"/calendar/linac/{world.ids['linac_id']}/week"
    _readable(client.get(linac_week, query_string={"start": value}), 400, "between 1900 and 2200")


@pytest.mark.parametrize("value", ["²", "١", "-1", "99999999999999999999"])
def test_unicode_digits_and_huge_numbers_in_query_numbers_are_a_400(
    client: FlaskClient, world: World, signed_in: SignIn, value: str
) -> None:
    signed_in(client, "admin")
    _readable(client.get("/calendar/week", query_string={"department": value}), 400, "department")
    _readable(client.get("/admin/audit", query_string={"page": value}), 400, "page")


@pytest.mark.parametrize("number", [2**31, 2**63, 10**30])
@pytest.mark.parametrize(
    "path",
    [
        "/patients/{n}",
        "/courses/{n}",
        "/calendar/linac/{n}/week",
        "/admin/users/{n}",
        "/downtime/{n}/edit",
        "/fractions/{n}/move",
        "/courses/{n}/messages",
    ],
)
def test_ids_beyond_the_database_integer_are_a_404(
    client: FlaskClient, seed: Seed, signed_in: SignIn, path: str, number: int
) -> None:
    signed_in(client, "admin")
    _readable(client.get(path.format(n=number)), 404, "Not Found")


def test_the_largest_database_integer_is_still_looked_up(
    client: FlaskClient, seed: Seed, signed_in: SignIn
) -> None:
    signed_in(client, "admin")
    # A plain "no such record": the route matched and the view ran its query.
    assert client.get(f"/patients/{MAX_ID}").status_code == 404
    assert client.get(f"/patients/{MAX_ID + 1}").status_code == 404


@pytest.mark.parametrize(
    ("day", "message"), [("9999-12-31", "between 1900 and 2200"), ("0001-01-01", "between")]
)
def test_closure_year_beyond_the_horizon_is_a_field_error(
    client: FlaskClient, db: Session, world: World, signed_in: SignIn, day: str, message: str
) -> None:
    csrf = signed_in(client, "admin")
    before = _count(db, Closure)
    response = client.post(
        f"/admin/departments/{world.ids['department_id']}/closures",
        data={"csrf_token": csrf, "day": day, "reason": "Far away"},
    )
    assert response.status_code == 422
    assert message in response.get_data(as_text=True)
    assert _count(db, Closure) == before


@pytest.mark.parametrize("when", ["9999-12-31T23:00", "0001-01-01T00:30"])
def test_downtime_in_year_9999_or_1_is_a_field_error(
    client: FlaskClient, db: Session, world: World, signed_in: SignIn, when: str
) -> None:
    csrf = signed_in(client, "scheduler")
    before = _count(db, Downtime)
    response = client.post(
        "/downtime/new",
        data={
            "csrf_token": csrf,
            "linac_id": str(world.ids["linac_id"]),
            "starts_local": when,
            "ends_local": when[:-2] + "59",
            "kind": "unplanned",
            "reason": "Far away",
            "action": "apply",
        },
    )
    assert response.status_code == 400
    assert "between 1900 and 2200" in response.get_data(as_text=True)
    assert _count(db, Downtime) == before


def test_readiness_time_in_year_9999_is_refused(
    client: FlaskClient, world: World, signed_in: SignIn
) -> None:
    csrf = signed_in(client, "scheduler")
    response = client.post(
        f"/courses/{world.ids['course_id']}/readiness",
        data={"csrf_token": csrf, "record": "ct_simulation", "done_at": "9999-12-31T23:30"},
    )
    assert response.status_code == 422
    assert "must be a local date and time" in response.get_data(as_text=True)


def test_date_of_birth_in_year_9999_is_a_field_error(
    client: FlaskClient, db: Session, world: World, signed_in: SignIn
) -> None:
    csrf = signed_in(client, "scheduler")
    before = _count(db, Patient)
    response = client.post(
        "/patients/new",
        data={
            "csrf_token": csrf,
            "mrn": "Y9999",
            "given_name": "Ana",
            "family_name": "Lopez",
            "date_of_birth": "9999-12-31",
            "phone": "(415) 555-0100",
            "phone_country": "US",
            "language": "en",
            "sms_consent": "yes",
        },
    )
    assert 400 <= response.status_code < 500
    assert _count(db, Patient) == before


@pytest.mark.parametrize(
    "target",
    [
        "/admin\r\nSet-Cookie: x=1",
        "/admin\nLocation: https://evil.example/",
        "/\\evil.example",
        "/\\/evil.example",
        "//evil.example",
        "/\tevil",
        "https://evil.example/",
    ],
)
def test_sign_in_never_follows_an_unsafe_next(
    client: FlaskClient, seed: Seed, db: Session, target: str
) -> None:
    login = client.get("/login", query_string={"next": target})
    assert login.status_code == 200
    response = client.post(
        "/login",
        query_string={"next": target},
        data={
            "csrf_token": csrf_from(login.get_data(as_text=True)),
            "email": "admin@example.org",
            "password": ADMIN_PASSWORD,
        },
    )
    assert response.status_code in (302, 400)
    if response.status_code == 302:
        assert response.headers["Location"] == "/"


def test_a_safe_next_is_still_followed(client: FlaskClient, seed: Seed) -> None:
    login = client.get("/login", query_string={"next": "/calendar/week?start=2026-03-09"})
    response = client.post(
        "/login",
        query_string={"next": "/calendar/week?start=2026-03-09"},
        data={
            "csrf_token": csrf_from(login.get_data(as_text=True)),
            "email": "admin@example.org",
            "password": ADMIN_PASSWORD,
        },
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "/calendar/week?start=2026-03-09"


@pytest.mark.parametrize("token", ["²", "é" * 43, "\u202e"])
def test_a_non_ascii_form_token_is_an_expired_form_not_a_server_error(
    client: FlaskClient, world: World, signed_in: SignIn, token: str
) -> None:
    signed_in(client, "admin")
    response = client.post("/admin/templates/confirmation/sms/en/reset", data={"csrf_token": token})
    _readable(response, 400, "The form expired")


@pytest.mark.parametrize("number", ["2147483648", "9223372036854775808"])
def test_a_department_id_beyond_the_database_integer_is_a_field_error(
    client: FlaskClient, db: Session, world: World, signed_in: SignIn, number: str
) -> None:
    csrf = signed_in(client, "admin")
    before = _count(db, Linac)
    response = client.post(
        "/admin/linacs/new",
        data={
            "csrf_token": csrf,
            "name": "Halcyon 3",
            "department_id": number,
            "capabilities": "sbrt",
            "department_hours": "on",
            "active": "on",
        },
    )
    assert response.status_code == 422
    assert f"no department with id {number}" in response.get_data(as_text=True)
    assert _count(db, Linac) == before


@pytest.mark.parametrize(
    "path",
    ["/fractions/{n}/move", "/courses/{n}/rebook", "/admin/linacs/{n}", "/downtime/{n}/edit"],
)
def test_a_post_to_an_id_beyond_the_database_integer_is_a_404_not_a_405(
    client: FlaskClient, seed: Seed, signed_in: SignIn, path: str
) -> None:
    csrf = signed_in(client, "admin")
    response = client.post(path.format(n=2**31), data={"csrf_token": csrf})
    _readable(response, 404, "Not Found")


def test_patient_pages_refuse_bad_input_in_their_own_frame(
    client: FlaskClient, world: World
) -> None:
    token = world.strings["token"][0]
    response = client.get(f"/p/{token}", query_string={"confirmed": "1\x00"})
    html = response.get_data(as_text=True)
    assert response.status_code == 400
    assert 'class="patient"' in html and "Please open the link in your message again" in html
    # A shared phone's history must not name the treatment or show staff navigation.
    assert "SBRT" not in html and BRAND not in html
