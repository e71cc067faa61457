"""A linac's downtime in its staff calendar feed: a busy block that follows edits and leaves
the feed when removed. Both database backends."""

from __future__ import annotations

from datetime import UTC, date, datetime, time

import pytest
import time_machine
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from tests.committing import links, services
from tests.pages.test_feeds import NOW, NY, book, feed_events, feed_owner

DAY = date(2026, 3, 5)


@pytest.fixture
def clock():
    with time_machine.travel(NOW, tick=False):
        yield


def at(hour: int) -> datetime:
    return datetime.combine(DAY, time(hour), NY).astimezone(UTC)


def test_downtime_is_a_busy_block_in_the_linac_feed(
    client: FlaskClient, db: Session, clock
) -> None:
    _, machines = book(db)
    a, b = machines["A"].id, machines["B"].id
    feed_a = links.issue_feed_token(db, a, "Physics", created_by_id=feed_owner(db))
    feed_b = links.issue_feed_token(db, b, "Physics", created_by_id=feed_owner(db))
    report = services.add_downtime(
        db, a, starts_at=at(8), ends_at=at(12), kind="unplanned", reason="MLC fault", now=NOW
    )
    downtime_id = report.downtime_id
    db.commit()

    _, events = feed_events(client, feed_a)
    (block,) = [e for e in events if str(e["UID"]).startswith("downtime-")]
    assert str(block["UID"]) == f"downtime-{downtime_id}@127.0.0.1"
    assert str(block["SUMMARY"]) == "Downtime (unplanned): MLC fault"
    assert (block.decoded("DTSTART"), block.decoded("DTEND")) == (
        datetime.combine(DAY, time(8), NY),
        datetime.combine(DAY, time(12), NY),
    )
    assert (str(block["TRANSP"]), int(block["SEQUENCE"])) == ("OPAQUE", 1)
    _, other = feed_events(client, feed_b)
    assert not [e for e in other if str(e["UID"]).startswith("downtime-")]

    services.update_downtime(
        db, downtime_id, starts_at=at(8), ends_at=at(14), kind="unplanned", reason="MLC fault",
        now=NOW,
    )  # fmt: skip
    db.commit()
    _, events = feed_events(client, feed_a)
    (block,) = [e for e in events if str(e["UID"]).startswith("downtime-")]
    assert int(block["SEQUENCE"]) == 2
    assert block.decoded("DTEND") == datetime.combine(DAY, time(14), NY)

    services.delete_downtime(db, downtime_id, now=NOW)
    db.commit()
    _, events = feed_events(client, feed_a)
    assert not [e for e in events if str(e["UID"]).startswith("downtime-")]
