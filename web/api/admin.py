"""Staff users and API tokens (admin), and the caller's own account."""

from __future__ import annotations

from scheduler import accounts
from scheduler.models import Role
from web.api import schemas as s
from web.api.registry import Audit, routes
from web.api.security import current_user_id
from web.db import get_session

ADMIN, VIEWER = Role.ADMIN.value, Role.VIEWER.value


@routes.operation(
    "GET", "/me", summary="The calling user", tag="Users", role=VIEWER, response=s.UserOut,
)  # fmt: skip
def get_me():
    return accounts.get_user(get_session(), current_user_id())


@routes.operation(
    "GET", "/users", summary="List staff users", tag="Users", role=ADMIN, response=s.UserOut,
    many=True,
)  # fmt: skip
def list_users():
    return accounts.list_users(get_session())


@routes.operation(
    "POST", "/users", summary="Create a staff user", tag="Users", role=ADMIN, body=s.UserIn,
    response=s.UserOut, status=201,
    audit=Audit("create", "user"),
)  # fmt: skip
def create_user(body: s.UserIn):
    """Without a password the user cannot sign in to pages, only use API tokens."""
    return accounts.create_user(
        get_session(), email=body.email, name=body.name, role=body.role, password=body.password
    )


@routes.operation(
    "GET", "/users/{user_id}", summary="Get a staff user", tag="Users", role=ADMIN,
    response=s.UserOut,
)  # fmt: skip
def get_user(user_id: int):
    return accounts.get_user(get_session(), user_id)


@routes.operation(
    "PATCH", "/users/{user_id}", summary="Update a staff user", tag="Users", role=ADMIN,
    body=s.UserPatch, response=s.UserOut,
    audit=Audit("update", "user"),
)  # fmt: skip
def update_user(user_id: int, body: s.UserPatch):
    """Admins cannot change their own role or deactivate themselves (no lock-outs). A new
    password, role or active state ends every signed-in session of the user. Deactivating a
    user revokes all their API tokens and revokes the calendar feeds they made; reactivating
    brings neither back."""
    return accounts.update_user(
        get_session(), user_id, actor_id=current_user_id(), **body.model_dump(exclude_none=True)
    )


@routes.operation(
    "GET", "/users/{user_id}/tokens", summary="List a user's API tokens", tag="Users",
    role=ADMIN, response=s.TokenOut, many=True,
)  # fmt: skip
def list_tokens(user_id: int):
    return accounts.list_api_tokens(get_session(), user_id=user_id)


@routes.operation(
    "POST", "/users/{user_id}/tokens", summary="Create an API token", tag="Users", role=ADMIN,
    body=s.TokenIn, response=s.NewTokenOut, status=201, errors=(409,),
    audit=Audit("create", "api_token"),
)  # fmt: skip
def create_token(user_id: int, body: s.TokenIn):
    """The token is in this response only; store it now."""
    issued = accounts.issue_api_token(get_session(), user_id, body.name)
    return s.NewTokenOut(
        **s.TokenOut.model_validate(issued.token).model_dump(), token=issued.plaintext
    )


@routes.operation(
    "POST", "/tokens/{token_id}/revoke", summary="Revoke an API token", tag="Users", role=ADMIN,
    response=s.TokenOut,
    audit=Audit("revoke", "api_token", id_from="token_id"),
)  # fmt: skip
def revoke_token(token_id: int):
    return accounts.revoke_api_token(get_session(), token_id)
