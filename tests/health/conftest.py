"""The page tests' fixtures: an app per backend, seed data and signing in."""

from tests.pages.conftest import app, client, db, seed, signed_in  # noqa: F401
