"""The department page's message window is checked by the records layer: a bad value is a
readable message next to the field, the form keeps what was typed, nothing is stored."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from scheduler.models import Department
from tests.api.conftest import Seed
from tests.pages.conftest import SignIn

HOURS = {f"{edge}_{d}": t for d in range(5) for edge, t in (("open", "07:00"), ("close", "19:00"))}


def _stored(db: Session, department_id: int) -> tuple[str, str, str]:
    db.expire_all()
    row = db.execute(
        sa.select(
            Department.name, Department.message_window_start, Department.message_window_end
        ).where(Department.id == department_id)
    ).one()
    db.rollback()
    return tuple(row)


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        ("25:00", "21:00", "must be a time HH:MM (24-hour)"),
        ("9h", "21:00", "must be a time HH:MM (24-hour)"),
        ("20:00", "07:00", "must be after the start"),
    ],
)
def test_a_bad_window_is_explained_and_nothing_is_stored(
    client: FlaskClient,
    db: Session,
    seed: Seed,
    signed_in: SignIn,
    start: str,
    end: str,
    message: str,
) -> None:
    csrf = signed_in(client, "admin")
    url = f"/admin/departments/{seed.department_id}"
    form = {"csrf_token": csrf, "name": "Renamed", "phone": "",
            "message_window_start": start, "message_window_end": end, **HOURS}  # fmt: skip
    response = client.post(url, data=form)
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert message in html
    assert 'value="Renamed"' in html and f'value="{start}"' in html
    assert _stored(db, seed.department_id) == ("Demo Radiation Oncology", "08:00", "21:00")

    saved = client.post(
        url, data={**form, "message_window_start": "09:00", "message_window_end": "20:00"}
    )
    assert saved.status_code == 302
    assert _stored(db, seed.department_id) == ("Renamed", "09:00", "20:00")
