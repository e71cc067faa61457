"""APP_ENV=production refuses the development defaults that would be unsafe in production."""

from __future__ import annotations

from pathlib import Path

import pytest

from config import ConfigurationError, load_settings

STRONG_KEY = "k" * 48
GOOD = {"APP_ENV": "production", "SECRET_KEY": STRONG_KEY, "PUBLIC_BASE_URL": "https://c.example"}


def _load(tmp_path: Path, **env: str):
    return load_settings({"INSTANCE_DIR": str(tmp_path), **env})


def test_production_with_a_key_and_an_https_address_starts_with_secure_cookies(
    tmp_path: Path,
) -> None:
    settings = _load(tmp_path, **GOOD)
    assert settings.is_production
    assert settings.session_cookie_secure
    assert settings.public_base_url == "https://c.example"


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"SECRET_KEY": ""}, "SECRET_KEY is not set"),
        ({"SECRET_KEY": "short-key"}, "SECRET_KEY is shorter than 32 characters"),
        ({"PUBLIC_BASE_URL": ""}, "PUBLIC_BASE_URL is not set"),
        ({"PUBLIC_BASE_URL": "http://c.example"}, "PUBLIC_BASE_URL must be an https:// address"),
        ({"PUBLIC_BASE_URL": "https://"}, "PUBLIC_BASE_URL must be an https:// address"),
        ({"SESSION_COOKIE_SECURE": "off"}, "SESSION_COOKIE_SECURE cannot be turned off"),
    ],
)
def test_production_refuses_an_unsafe_setting(
    tmp_path: Path, changes: dict[str, str], problem: str
) -> None:
    with pytest.raises(ConfigurationError) as refused:
        _load(tmp_path, **{**GOOD, **changes})
    message = str(refused.value)
    assert message.startswith("refusing to start with APP_ENV=production: ")
    assert problem in message
    assert "\n" not in message
    # Nothing was generated in its place: production never writes a key of its own.
    assert not (tmp_path / "secret_key").exists()


def test_every_problem_is_named_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as refused:
        _load(tmp_path, APP_ENV="production")
    message = str(refused.value)
    assert "SECRET_KEY is not set" in message and "PUBLIC_BASE_URL is not set" in message
    assert "\n" not in message


def test_a_misspelt_environment_is_refused_not_taken_for_development(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="APP_ENV must be one of"):
        _load(tmp_path, APP_ENV="prod", **{k: v for k, v in GOOD.items() if k != "APP_ENV"})


def test_development_keeps_its_defaults(tmp_path: Path) -> None:
    settings = _load(tmp_path)
    assert not settings.is_production
    assert settings.public_base_url == "http://127.0.0.1:5000"
    assert not settings.session_cookie_secure
    assert (tmp_path / "secret_key").exists()
