"""Deactivating a user through the API revokes their tokens for good, and ends their sessions."""

from __future__ import annotations

from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from scheduler.models import ApiToken, User
from tests.api.conftest import Seed


def _scheduler(db: Session) -> User:
    return db.query(User).filter(User.email == "scheduler@example.org").one()


def test_reactivated_user_gets_no_old_token_back(
    client: FlaskClient, db: Session, seed: Seed
) -> None:
    user_id = _scheduler(db).id
    db.rollback()
    old_token = seed.auth("scheduler")
    assert client.get("/api/v1/me", headers=old_token).status_code == 200

    off = client.patch(f"/api/v1/users/{user_id}", json={"active": False}, headers=seed.auth())
    assert off.status_code == 200
    on = client.patch(f"/api/v1/users/{user_id}", json={"active": True}, headers=seed.auth())
    assert on.status_code == 200 and on.json["active"] is True

    assert client.get("/api/v1/me", headers=old_token).status_code == 401
    tokens = client.get(f"/api/v1/users/{user_id}/tokens", headers=seed.auth()).json
    assert tokens and all(t["revoked_at"] for t in tokens)
    # A token made after reactivation works.
    new = client.post(f"/api/v1/users/{user_id}/tokens", json={"name": "new"}, headers=seed.auth())
    assert new.status_code == 201
    me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {new.json['token']}"})
    assert me.status_code == 200


def test_session_epoch_moves_only_on_changes_that_end_sessions(
    client: FlaskClient, db: Session, seed: Seed
) -> None:
    user = _scheduler(db)
    user_id, epoch = user.id, user.session_epoch
    db.rollback()

    def patch(body: dict) -> int:
        response = client.patch(f"/api/v1/users/{user_id}", json=body, headers=seed.auth())
        assert response.status_code == 200, response.json
        db.expire_all()
        value = _scheduler(db).session_epoch
        db.rollback()
        return value

    assert patch({"name": "Renamed"}) == epoch
    assert patch({"role": "scheduler"}) == epoch  # the same role: nothing changes
    assert patch({"role": "viewer"}) == epoch + 1
    assert patch({"password": "a-new-password-long"}) == epoch + 2
    assert patch({"active": False}) == epoch + 3
    assert patch({"active": False}) == epoch + 3
    assert patch({"active": True}) == epoch + 4
    # The admin's own token was never touched.
    assert db.query(ApiToken).filter(ApiToken.revoked_at.is_(None)).count() >= 1
