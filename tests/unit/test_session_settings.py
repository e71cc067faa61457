"""The session settings: the cookie is Secure whenever the public address is https."""

from __future__ import annotations

from pathlib import Path

import pytest

from config import load_settings


def _settings(tmp_path: Path, **env: str):
    return load_settings({"SECRET_KEY": "k", "INSTANCE_DIR": str(tmp_path), **env})


def test_cookie_is_secure_when_the_public_address_is_https(tmp_path: Path) -> None:
    assert _settings(tmp_path, PUBLIC_BASE_URL="https://sbrt.example.org").session_cookie_secure
    assert _settings(tmp_path, PUBLIC_BASE_URL="HTTPS://sbrt.example.org").session_cookie_secure


def test_cookie_is_not_secure_on_plain_http_by_default(tmp_path: Path) -> None:
    assert not _settings(tmp_path).session_cookie_secure
    assert not _settings(tmp_path, PUBLIC_BASE_URL="http://10.0.0.5:5000").session_cookie_secure


def test_explicit_cookie_setting_wins(tmp_path: Path) -> None:
    https = "https://sbrt.example.org"
    settings = _settings(tmp_path, PUBLIC_BASE_URL=https, SESSION_COOKIE_SECURE="0")
    assert not settings.session_cookie_secure
    assert _settings(tmp_path, SESSION_COOKIE_SECURE="1").session_cookie_secure
    # Empty, as docker-compose passes an unset variable, means "not set".
    assert _settings(
        tmp_path, PUBLIC_BASE_URL=https, SESSION_COOKIE_SECURE=""
    ).session_cookie_secure


def test_session_lifetimes_default_and_are_configurable(tmp_path: Path) -> None:
    default = _settings(tmp_path)
    assert (default.session_idle_minutes, default.session_max_hours) == (30, 12)
    custom = _settings(tmp_path, SESSION_IDLE_MINUTES="15", SESSION_MAX_HOURS="8")
    assert (custom.session_idle_minutes, custom.session_max_hours) == (15, 8)


@pytest.mark.parametrize("name", ["SESSION_IDLE_MINUTES", "SESSION_MAX_HOURS"])
def test_session_lifetimes_must_be_positive(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        _settings(tmp_path, **{name: "0"})
