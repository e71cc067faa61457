"""The what-if tests use the page tests' app, seed data and sign-in."""

from __future__ import annotations

from tests.api.conftest import app, client, db, seed  # noqa: F401
from tests.pages.conftest import signed_in  # noqa: F401
