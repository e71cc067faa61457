"""Admin pages for staff calendar feeds: a linac's feeds are created on its page (the secret
URL shown once), listed and revoked there; admin only, CSRF-checked, audited by id."""

from __future__ import annotations

import re
from html import unescape
from urllib.parse import urlsplit

import sqlalchemy as sa
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from scheduler.models import AuditEntry, CalendarFeed
from tests.api.conftest import Seed
from tests.committing import links
from tests.pages.conftest import csrf_from

# The sign-in helper and the cheap password hashing of the message page tests.
from tests.pages.test_messages_pages import _fast_password_hashes, sign_in  # noqa: F401

FEED_URL_RE = re.compile(r'id="new-feed-url"[^>]*value="([^"]+)"')


def _feeds(db: Session) -> list[sa.Row]:
    """The stored feeds as plain rows (nothing left to lazy-load once the read ends)."""
    rows = db.execute(
        sa.select(
            CalendarFeed.id,
            CalendarFeed.token_digest,
            CalendarFeed.linac_id,
            CalendarFeed.name,
            CalendarFeed.created_by_id,
            CalendarFeed.revoked_at,
        ).order_by(CalendarFeed.id)
    ).all()
    db.rollback()  # never hold a transaction (SQLite's write lock) while the app runs
    return list(rows)


def _text(response) -> str:
    """The page's text with markup entities decoded and runs of whitespace made one space."""
    return " ".join(unescape(response.get_data(as_text=True)).split())


def _audit(db: Session) -> list[tuple[str, int | None, dict]]:
    rows = db.execute(
        sa.select(AuditEntry.action, AuditEntry.subject_id, AuditEntry.detail)
        .where(AuditEntry.subject_type == "calendar_feed")
        .order_by(AuditEntry.id)
    ).all()
    db.rollback()
    return [(action, subject_id, detail) for action, subject_id, detail in rows]


def _create(client: FlaskClient, csrf: str, linac_id: int, name: str):
    return client.post(
        f"/admin/linacs/{linac_id}/feeds", data={"csrf_token": csrf, "feed_name": name}
    )


def _feed_url(response) -> str:
    match = FEED_URL_RE.search(response.get_data(as_text=True))
    assert match, "the page shows no feed URL"
    return unescape(match.group(1))


def test_admin_creates_lists_and_revokes_a_feed(
    client: FlaskClient, db: Session, seed: Seed
) -> None:
    csrf = sign_in(client, db, "admin")
    linac_id = seed.linac_ids[0]
    page = client.get(f"/admin/linacs/{linac_id}").get_data(as_text=True)
    assert "Calendar feeds" in page and "No feeds." in page

    created = _create(client, csrf, linac_id, "  Physics phones  ")
    assert created.status_code == 201
    assert created.headers["Cache-Control"] == "no-store"
    url = _feed_url(created)
    text = _text(created)
    assert "it is not shown again" in text
    assert "Anyone with the URL can read this linac's bookings" in text
    # On the configured public root, at the feed's own route.
    assert url.startswith("http://127.0.0.1:5000/feeds/linac/") and url.endswith(".ics")
    token = urlsplit(url).path.removeprefix("/feeds/linac/").removesuffix(".ics")
    assert len(token) == links.FEED_TOKEN_LENGTH

    feed = client.get(urlsplit(url).path)
    assert feed.status_code == 200
    assert feed.headers["Content-Type"] == "text/calendar; charset=utf-8"
    assert feed.data.startswith(b"BEGIN:VCALENDAR") and b"X-WR-CALNAME:TrueBeam 1" in feed.data

    # Only the digest is stored, for this linac, with the admin as its creator.
    (row,) = _feeds(db)
    assert row.token_digest == links.token_digest(token) and token not in row.token_digest
    assert (row.linac_id, row.name, row.created_by_id) == (
        linac_id,
        "Physics phones",
        seed.admin_id,
    )
    assert row.revoked_at is None
    # Neither flashed nor kept in the session cookie; shown once only.
    with client.session_transaction() as session:
        assert token not in repr(dict(session))
        assert not session.get("_flashes")
    listing = client.get(f"/admin/linacs/{linac_id}").get_data(as_text=True)
    assert token not in listing and 'id="new-feed-url"' not in listing
    assert "<td>Physics phones</td>" in listing and "<td>active</td>" in listing
    assert f'action="/admin/feeds/{row.id}/revoke"' in listing
    # The other linac's page does not list it.
    other = client.get(f"/admin/linacs/{seed.linac_ids[1]}").get_data(as_text=True)
    assert "Physics phones" not in other and "No feeds." in other

    revoked = client.post(f"/admin/feeds/{row.id}/revoke", data={"csrf_token": csrf})
    assert revoked.status_code == 302
    assert urlsplit(revoked.headers["Location"]).path == f"/admin/linacs/{linac_id}"
    assert client.get(urlsplit(url).path).status_code == 404
    (row,) = _feeds(db)
    first_revoked_at = row.revoked_at
    assert first_revoked_at is not None
    after = client.get(f"/admin/linacs/{linac_id}").get_data(as_text=True)
    assert "Feed Physics phones revoked" in after  # the flash
    assert re.search(r"<td>revoked \w{3} \d+ \w{3} \d{4} \d\d:\d\d E[SD]T</td>", after)
    assert f'action="/admin/feeds/{row.id}/revoke"' not in after

    # Revoking again is harmless: the first time stays, nothing more is audited.
    again = client.post(f"/admin/feeds/{row.id}/revoke", data={"csrf_token": csrf})
    assert again.status_code == 302
    assert _feeds(db)[0].revoked_at == first_revoked_at
    assert client.get(urlsplit(url).path).status_code == 404

    # By id only: neither the token, its digest nor the feed's name is in the audit log.
    entries = _audit(db)
    assert [(action, subject_id) for action, subject_id, _ in entries] == [
        ("create", row.id),
        ("revoke", row.id),
    ]
    for _, _, detail in entries:
        assert detail["linac"] == linac_id
        text = repr(detail)
        assert token not in text and row.token_digest not in text and "Physics" not in text
    log = client.get("/admin/audit").get_data(as_text=True)
    assert "calendar_feed" in log


def test_feed_name_is_required_and_bounded(client: FlaskClient, db: Session, seed: Seed) -> None:
    csrf = sign_in(client, db, "admin")
    linac_id = seed.linac_ids[0]
    for name in ("", "   "):
        rejected = _create(client, csrf, linac_id, name)
        assert rejected.status_code == 422
        html = rejected.get_data(as_text=True)
        assert "Enter a name, such as who or what subscribes to the feed." in html
        assert 'aria-invalid="true" aria-describedby="err-feed_name"' in html
        assert 'id="new-feed-url"' not in html
    too_long = _create(client, csrf, linac_id, "x" * 101)
    assert too_long.status_code == 422
    html = too_long.get_data(as_text=True)
    assert "Use at most 100 characters." in html
    assert 'value="' + "x" * 101 + '"' in html  # kept as typed
    assert _feeds(db) == [] and _audit(db) == []

    longest = _create(client, csrf, linac_id, "y" * 100)
    assert longest.status_code == 201
    assert [f.name for f in _feeds(db)] == ["y" * 100]

    # The page lists the newest feed first.
    assert _create(client, csrf, linac_id, "Dosimetry tablet").status_code == 201
    page = client.get(f"/admin/linacs/{linac_id}").get_data(as_text=True)
    assert page.index("<td>Dosimetry tablet</td>") < page.index("<td>" + "y" * 100 + "</td>")


def test_feed_pages_are_admin_only_and_csrf_checked(
    client: FlaskClient, db: Session, seed: Seed
) -> None:
    linac_id = seed.linac_ids[0]
    token = links.issue_feed_token(db, linac_id, "Existing", created_by_id=seed.admin_id)
    feed_id = _feeds(db)[0].id

    # Signed out: refused without a CSRF token (checked first, for every changing request)...
    assert _create(client, "", linac_id, "Sneaky").status_code == 400
    assert client.post(f"/admin/feeds/{feed_id}/revoke").status_code == 400
    # ...and with one, sent to the sign-in page like every staff page.
    anonymous = csrf_from(client.get("/login").get_data(as_text=True))
    signed_out = _create(client, anonymous, linac_id, "Sneaky")
    assert signed_out.status_code == 302 and "/login" in signed_out.headers["Location"]
    revoke = client.post(f"/admin/feeds/{feed_id}/revoke", data={"csrf_token": anonymous})
    assert revoke.status_code == 302

    csrf = sign_in(client, db, "scheduler")
    assert _create(client, csrf, linac_id, "Sneaky").status_code == 403
    revoke = client.post(f"/admin/feeds/{feed_id}/revoke", data={"csrf_token": csrf})
    assert revoke.status_code == 403
    assert client.get(f"/admin/linacs/{linac_id}").status_code == 403

    csrf = sign_in(client, db, "admin")
    # No or a wrong CSRF token: refused like every other form.
    assert _create(client, "", linac_id, "Forged").status_code == 400
    assert _create(client, csrf + "x", linac_id, "Forged").status_code == 400
    assert client.post(f"/admin/feeds/{feed_id}/revoke").status_code == 400
    forged = client.post(f"/admin/feeds/{feed_id}/revoke", data={"csrf_token": "forged"})
    assert forged.status_code == 400

    # Nothing changed: one feed, still live, no audit entries.
    (row,) = _feeds(db)
    assert row.name == "Existing" and row.revoked_at is None
    assert _audit(db) == []
    assert client.get(f"/feeds/linac/{token}.ics").status_code == 200

    # Unknown linac or feed.
    assert _create(client, csrf, 999999, "Nowhere").status_code == 404
    assert client.post("/admin/feeds/999999/revoke", data={"csrf_token": csrf}).status_code == 404
    assert len(_feeds(db)) == 1 and _audit(db) == []
