"""A staff feed stays a valid calendar when a linac name or downtime reason stored before names
were checked holds a line break: no 500, and no raw CR or LF inside a content line."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient
from icalendar import Calendar
from sqlalchemy.orm import Session

from scheduler.models import Downtime, Linac
from tests.committing import links
from tests.pages.test_feeds import NOW, book, feed_owner, travel  # noqa: F401 - fixture


def _content_lines(body: bytes) -> list[bytes]:
    # RFC 5545 ends every content line with CRLF; a bare CR or LF anywhere else is an
    # injected line.
    assert body.endswith(b"\r\n")
    lines = body[: -len(b"\r\n")].split(b"\r\n")
    for line in lines:
        assert b"\r" not in line and b"\n" not in line, line
    return lines


@pytest.mark.parametrize(
    ("stored_name", "shown"),
    [
        ("TrueBeam\nA", "TrueBeam A"),
        ("TrueBeam\rA", "TrueBeam A"),
        ("TrueBeam\r\nEND:VCALENDAR", "TrueBeam  END:VCALENDAR"),
        ("TrueBeam\u202eA\x07", "TrueBeam A "),
    ],
)
@pytest.mark.usefixtures("travel")
def test_a_feed_writes_stored_control_characters_as_spaces(
    client: FlaskClient, db: Session, stored_name: str, shown: str
) -> None:
    _course, machines = book(db)
    linac_id = machines["A"].id
    # Written past the records layer, as a row stored before names were checked would be.
    db.execute(sa.update(Linac).where(Linac.id == linac_id).values(name=stored_name))
    db.add(
        Downtime(
            linac_id=linac_id,
            starts_at=NOW + timedelta(days=20),
            ends_at=NOW + timedelta(days=20, hours=2),
            kind="planned",
            reason="Service\nEND:VEVENT",
            created_at=NOW,
        )
    )
    db.commit()
    token = links.issue_feed_token(db, linac_id, "Physics", created_by_id=feed_owner(db))

    response = client.get(f"/feeds/linac/{token}.ics")

    assert response.status_code == 200
    lines = _content_lines(response.data)
    assert lines.count(b"END:VCALENDAR") == 1
    assert lines.count(b"END:VEVENT") == 6  # five fractions and the downtime
    calendar = Calendar.from_ical(response.data)
    events = calendar.walk("VEVENT")
    assert {str(e["LOCATION"]) for e in events} == {shown}
    assert "Downtime (planned): Service END:VEVENT" in [str(e["SUMMARY"]) for e in events]
