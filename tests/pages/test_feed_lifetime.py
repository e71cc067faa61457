"""A calendar feed lives only as long as its owner and its linac: deactivating either revokes
it for good (reactivating does not revive it), a feed of an inactive owner or linac is never
served whatever path changed the row, and the admin page shows each feed's owner, creation
and last use. Both database backends, through HTTP."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from html import unescape

import pytest
import sqlalchemy as sa
import time_machine
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from scheduler.models import AuditEntry, CalendarFeed, Linac, User
from tests.api.conftest import Seed
from tests.committing import accounts, links, records

# The sign-in helper and the cheap password hashing of the message page tests.
from tests.pages.test_messages_pages import _fast_password_hashes, sign_in  # noqa: F401

# A Monday noon in New York (EST): admin pages show times in the department's zone.
NOW = datetime(2026, 3, 2, 17, 0, tzinfo=UTC)


@pytest.fixture
def clock():
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


def _owner(db: Session, email: str = "owner@example.org") -> int:
    """A second admin, so that the signed-in admin can deactivate the feed's owner."""
    user_id = accounts.create_user(db, email=email, name="Olive Owner", role="admin").id
    db.commit()
    return user_id


def _issue(db: Session, linac_id: int, owner_id: int, name: str = "Physics phones") -> str:
    token = links.issue_feed_token(db, linac_id, name, created_by_id=owner_id)
    db.rollback()  # never hold SQLite's write lock while the app runs
    return token


def _get(client: FlaskClient, token: str) -> int:
    return client.get(f"/feeds/linac/{token}.ics").status_code


def _feed(db: Session, token: str) -> sa.Row:
    row = db.execute(
        sa.select(CalendarFeed.id, CalendarFeed.revoked_at, CalendarFeed.last_used_at).where(
            CalendarFeed.token_digest == links.token_digest(token)
        )
    ).one()
    db.rollback()
    return row


def _feed_audit(db: Session) -> list[tuple[str, int | None, str | None]]:
    rows = db.execute(
        sa.select(AuditEntry.action, AuditEntry.subject_id, AuditEntry.detail)
        .where(AuditEntry.subject_type == "calendar_feed")
        .order_by(AuditEntry.id)
    ).all()
    db.rollback()
    return [(action, subject_id, detail.get("reason")) for action, subject_id, detail in rows]


def _save_user(client: FlaskClient, csrf: str, user_id: int, *, active: bool):
    data = {"csrf_token": csrf, "name": "Olive Owner", "role": "admin"}
    if active:
        data["active"] = "on"
    return client.post(f"/admin/users/{user_id}", data=data)


def _save_linac(client: FlaskClient, csrf: str, linac_id: int, *, active: bool):
    data = {
        "csrf_token": csrf,
        "name": "TrueBeam 1",
        "capabilities": ["sbrt", "cbct", "gating"],
        "beam_group": "truebeam",
        "department_hours": "on",
    }
    if active:
        data["active"] = "on"
    return client.post(f"/admin/linacs/{linac_id}", data=data)


def _page_text(client: FlaskClient, linac_id: int) -> str:
    """The linac page's words, without markup, whitespace runs made one space."""
    html = client.get(f"/admin/linacs/{linac_id}").get_data(as_text=True)
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


def test_deactivating_the_owner_revokes_their_feeds_for_good(
    client: FlaskClient, db: Session, seed: Seed, clock
) -> None:
    owner_id = _owner(db)
    linac_a, linac_b = seed.linac_ids
    token = _issue(db, linac_a, owner_id)
    other_linac = _issue(db, linac_b, owner_id, "Dosimetry")
    admins_own = _issue(db, linac_a, seed.admin_id, "Admin's own")
    assert {_get(client, t) for t in (token, other_linac, admins_own)} == {200}

    csrf = sign_in(client, db, "admin")
    assert _save_user(client, csrf, owner_id, active=False).status_code == 302
    # Every feed the owner made, on every linac, now answers as an unknown token does.
    assert _get(client, token) == _get(client, other_linac) == 404
    assert _get(client, "x" * links.FEED_TOKEN_LENGTH) == 404
    assert _get(client, admins_own) == 200  # another owner's feed is untouched
    assert _feed(db, token).revoked_at == NOW

    # Reactivating the owner does not bring the old URLs back: an admin issues new ones.
    assert _save_user(client, csrf, owner_id, active=True).status_code == 302
    assert _get(client, token) == _get(client, other_linac) == 404
    assert _feed(db, token).revoked_at == NOW

    # Each revocation is audited by feed id with its cause, once.
    revoked = sorted([_feed(db, token).id, _feed(db, other_linac).id])
    entries = _feed_audit(db)
    assert sorted(subject for _, subject, _ in entries) == revoked
    assert {(action, reason) for action, _, reason in entries} == {("revoke", "owner deactivated")}
    text = _page_text(client, linac_a)
    assert "Olive Owner (deactivated)" not in text  # active again, so shown plainly
    assert re.search(r"Physics phones Olive Owner .*? revoked Mon 2 Mar 2026 12:00 EST", text)


def test_deactivating_a_user_through_the_service_or_the_api_revokes_their_feeds(
    client: FlaskClient, db: Session, seed: Seed
) -> None:
    owner_id = _owner(db)
    token = _issue(db, seed.linac_ids[0], owner_id)
    accounts.update_user(db, owner_id, active=False, now=NOW)
    assert links.resolve_feed_token(db, token) is None
    assert _feed(db, token).revoked_at == NOW
    accounts.update_user(db, owner_id, active=True, now=NOW + timedelta(days=1))
    assert links.resolve_feed_token(db, token) is None
    assert _feed(db, token).revoked_at == NOW

    second_id = _owner(db, "second@example.org")
    through_api = _issue(db, seed.linac_ids[0], second_id)
    patched = client.patch(
        f"/api/v1/users/{second_id}", json={"active": False}, headers=seed.auth("admin")
    )
    assert patched.status_code == 200, patched.get_data(as_text=True)
    assert _get(client, through_api) == 404
    assert _feed(db, through_api).revoked_at is not None


def test_a_feed_whose_owner_is_inactive_by_any_path_is_not_served(
    client: FlaskClient, db: Session, seed: Seed
) -> None:
    owner_id = _owner(db)
    token = _issue(db, seed.linac_ids[0], owner_id)
    assert _get(client, token) == 200
    # A change that skipped the use case (a script, a restored backup) still stops the feed.
    db.execute(sa.update(User).where(User.id == owner_id).values(active=False))
    db.commit()
    assert _get(client, token) == 404
    assert _feed(db, token).revoked_at is None


def test_a_feed_needs_an_owner(client: FlaskClient, db: Session, seed: Seed) -> None:
    with pytest.raises(ValueError, match="user who creates it"):
        links.issue_feed_token(db, seed.linac_ids[0], "Nobody's", created_by_id=None)  # type: ignore[arg-type]
    db.rollback()
    token = "o" * links.FEED_TOKEN_LENGTH
    db.add(CalendarFeed(token_digest=links.token_digest(token), linac_id=seed.linac_ids[0]))
    db.commit()
    assert _get(client, token) == 404


def test_deactivating_the_linac_revokes_its_feeds_for_good(
    client: FlaskClient, db: Session, seed: Seed, clock
) -> None:
    owner_id = _owner(db)
    linac_a, linac_b = seed.linac_ids
    token = _issue(db, linac_a, owner_id)
    other = _issue(db, linac_b, owner_id, "Other machine")
    assert _get(client, token) == _get(client, other) == 200

    csrf = sign_in(client, db, "admin")
    assert _save_linac(client, csrf, linac_a, active=False).status_code == 302
    assert _get(client, token) == 404
    assert _get(client, other) == 200  # the other linac's feed is untouched
    assert _feed(db, token).revoked_at == NOW

    assert _save_linac(client, csrf, linac_a, active=True).status_code == 302
    assert _get(client, token) == 404
    assert _feed_audit(db) == [("revoke", _feed(db, token).id, "linac deactivated")]

    # Through the API (and the service) alike.
    patched = client.patch(
        f"/api/v1/linacs/{linac_b}", json={"active": False}, headers=seed.auth("admin")
    )
    assert patched.status_code == 200, patched.get_data(as_text=True)
    assert _get(client, other) == 404
    records.update_linac(db, linac_b, {"active": True})
    db.commit()
    assert _get(client, other) == 404


def test_a_feed_of_a_linac_inactive_by_any_path_is_not_served(
    client: FlaskClient, db: Session, seed: Seed
) -> None:
    token = _issue(db, seed.linac_ids[0], _owner(db))
    assert _get(client, token) == 200
    db.execute(sa.update(Linac).where(Linac.id == seed.linac_ids[0]).values(active=False))
    db.commit()
    assert _get(client, token) == 404


def test_last_use_is_noted_at_most_once_per_quarter_hour_and_shown_to_admins(
    client: FlaskClient, db: Session, seed: Seed, clock
) -> None:
    owner_id = _owner(db)
    linac_id = seed.linac_ids[0]
    token = _issue(db, linac_id, owner_id)
    assert _feed(db, token).last_used_at is None

    csrf = sign_in(client, db, "admin")
    assert csrf
    text = _page_text(client, linac_id)
    assert re.search(
        r"<th scope=\"col\">Owner</th>.*<th scope=\"col\">Last used</th>",
        client.get(f"/admin/linacs/{linac_id}").get_data(as_text=True),
        re.S,
    )
    assert "Physics phones Olive Owner Mon 2 Mar 2026 12:00 EST never active" in text

    assert _get(client, token) == 200
    assert _feed(db, token).last_used_at == NOW
    # Calendar apps poll every few minutes: those fetches write nothing.
    clock.move_to(NOW + timedelta(minutes=14))
    assert _get(client, token) == 200
    assert _feed(db, token).last_used_at == NOW
    clock.move_to(NOW + timedelta(minutes=15))
    assert _get(client, token) == 200
    assert _feed(db, token).last_used_at == NOW + timedelta(minutes=15)

    # Later the same session (inside its 30 idle minutes), the admin sees the last use.
    clock.move_to(NOW + timedelta(minutes=20))
    text = _page_text(client, linac_id)
    assert (
        "Physics phones Olive Owner Mon 2 Mar 2026 12:00 EST Mon 2 Mar 2026 12:15 EST active"
        in text
    )

    # A refused fetch is no use: a revoked feed's last use stays as it was.
    accounts.update_user(db, owner_id, active=False, now=NOW + timedelta(hours=3))
    db.rollback()
    assert _get(client, token) == 404
    assert _feed(db, token).last_used_at == NOW + timedelta(minutes=15)
    text = _page_text(client, linac_id)
    assert "Physics phones Olive Owner (deactivated) Mon 2 Mar 2026 12:00 EST" in text


def test_an_inactive_linac_gets_no_new_feed(client: FlaskClient, db: Session, seed: Seed) -> None:
    linac_id = seed.linac_ids[0]
    records.update_linac(db, linac_id, {"active": False})
    db.rollback()
    csrf = sign_in(client, db, "admin")
    refused = client.post(
        f"/admin/linacs/{linac_id}/feeds", data={"csrf_token": csrf, "feed_name": "Physics"}
    )
    assert refused.status_code == 422
    html = unescape(refused.get_data(as_text=True))
    assert "This linac is inactive; activate it before adding a feed." in html
    assert 'id="new-feed-url"' not in html and 'value="Physics"' in html
    assert db.scalar(sa.select(sa.func.count()).select_from(CalendarFeed)) == 0


def test_the_api_document_says_deactivation_revokes_feeds(client: FlaskClient) -> None:
    paths = client.get("/api/openapi.json").json["paths"]
    user_patch = next(v["patch"] for k, v in paths.items() if k.endswith("/users/{user_id}"))
    linac_patch = next(v["patch"] for k, v in paths.items() if k.endswith("/linacs/{linac_id}"))
    assert "revokes the calendar feeds they made" in user_patch["description"]
    assert "revokes its calendar feeds" in linac_patch["description"]


def test_the_user_page_lists_the_feeds_they_made(
    client: FlaskClient, db: Session, seed: Seed, clock
) -> None:
    owner_id = _owner(db)
    linac_a, linac_b = seed.linac_ids
    token = _issue(db, linac_a, owner_id)
    _issue(db, linac_b, owner_id, "Dosimetry")
    _issue(db, linac_a, seed.admin_id, "Someone else's")
    clock.move_to(NOW + timedelta(minutes=30))
    assert _get(client, token) == 200

    csrf = sign_in(client, db, "admin")

    def words() -> str:
        html = client.get(f"/admin/users/{owner_id}").get_data(as_text=True)
        return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())

    text = words()
    assert "Calendar feeds made by Olive Owner" in text
    assert "TrueBeam 1 Physics phones Mon 2 Mar 2026 12:00 EST Mon 2 Mar 2026 12:30 EST active" in (
        text
    )
    assert "TrueBeam 2 Dosimetry Mon 2 Mar 2026 12:00 EST never active" in text
    assert "Someone else's" not in text

    assert _save_user(client, csrf, owner_id, active=False).status_code == 302
    text = words()
    assert "Physics phones Mon 2 Mar 2026 12:00 EST Mon 2 Mar 2026 12:30 EST revoked" in text
    assert " active " not in text.split("Calendar feeds made by")[1]
