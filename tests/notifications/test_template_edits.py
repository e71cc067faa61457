"""Saving and resetting message template edits as use cases: every language is checked, only
changes are stored, and nothing is committed by the use case itself."""

from __future__ import annotations

import sqlalchemy as sa

from notifications import template_store
from notifications.models import MessageTemplate
from scheduler.unit_of_work import transaction

KIND, PART = "confirmation", "email_subject"


def _shipped() -> dict[str, str]:
    return {
        lang: template_store.shipped_source(KIND, PART, lang) for lang in template_store.LANGUAGES
    }


def _stored(session_factory) -> list[tuple[str, str]]:
    with session_factory() as other:
        return [
            (row.language, row.source)
            for row in other.scalars(sa.select(MessageTemplate).order_by(MessageTemplate.language))
        ]


def test_a_valid_edit_is_stored_once_its_caller_commits(session, session_factory):
    sources = {**_shipped(), "en": _shipped()["en"].rstrip() + " (updated)"}
    result = template_store.save_edits(session, KIND, PART, sources, user_id=None)
    assert result.ok and [edit.language for edit in result.saved] == ["en"]
    session.rollback()
    assert _stored(session_factory) == []

    with transaction(session):
        result = template_store.save_edits(session, KIND, PART, sources, user_id=None)
    assert _stored(session_factory) == [("en", template_store.normalise_source(sources["en"]))]
    assert result.saved[0].template_id is not None

    with transaction(session):
        again = template_store.save_edits(session, KIND, PART, sources, user_id=None)
    assert again.saved == []  # unchanged text is not saved again


def test_one_refused_language_stores_nothing(session, session_factory):
    sources = {**_shipped(), "en": _shipped()["en"].rstrip() + " (ok)", "es": "{{ broken"}
    with transaction(session):
        result = template_store.save_edits(session, KIND, PART, sources, user_id=None)
    assert not result.ok and not result.checks["es"].ok and result.saved == []
    assert _stored(session_factory) == []


def test_reset_removes_the_edit_and_says_which_it_was(session, session_factory):
    sources = {**_shipped(), "en": _shipped()["en"].rstrip() + " (new)"}
    with transaction(session):
        saved = template_store.save_edits(session, KIND, PART, sources, user_id=None)
    with transaction(session):
        removed = template_store.reset_override(session, KIND, PART, "en")
    assert removed == saved.saved[0].template_id
    assert _stored(session_factory) == []
    with transaction(session):
        assert template_store.reset_override(session, KIND, PART, "en") is None
