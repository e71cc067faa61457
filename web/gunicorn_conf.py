"""Gunicorn hooks of the web service: `gunicorn --config python:web.gunicorn_conf ...`."""

from __future__ import annotations

from typing import Any

from config import load_settings_or_exit


def on_starting(_server: Any) -> None:
    """Check the settings once in the master process, before any worker is forked.

    A worker that fails to load the app makes gunicorn halt with a traceback per worker; bad
    settings are the operator's to fix, so they end the master with one error line instead.
    """
    load_settings_or_exit()
