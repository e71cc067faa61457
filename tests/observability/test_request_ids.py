"""Request ids in the web app: taken from a sane caller, else made; answered; on log lines."""

from __future__ import annotations

import io
import json
import logging

import pytest
from flask import Flask

from config import load_settings
from scheduler.observability.logs import make_handler

sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@sqlite_only
def test_a_sane_incoming_id_is_kept_and_any_other_replaced(database_url: str, app: Flask) -> None:
    client = app.test_client()
    kept = client.get("/healthz", headers={"X-Request-ID": "lb-7f3a9c21.42"})
    assert kept.headers["X-Request-ID"] == "lb-7f3a9c21.42"
    made = {client.get("/healthz").headers["X-Request-ID"] for _ in range(3)}
    assert len(made) == 3 and all(len(x) == 32 for x in made)
    for bad in ("short", "x" * 200, "abc def ghi jkl", "abcdefgh<script>", "é" * 10):
        answered = client.get("/healthz", headers={"X-Request-ID": bad}).headers["X-Request-ID"]
        assert answered != bad and len(answered) == 32


@sqlite_only
def test_every_line_logged_during_a_request_carries_its_id(database_url: str, app: Flask) -> None:
    stream = io.StringIO()
    handler = make_handler("json", "web", stream)
    logging.getLogger().addHandler(handler)
    try:

        @app.get("/log-something")
        def log_something() -> str:
            logging.getLogger("web.test").warning("something for %s", "a test")
            return "ok"

        app.test_client().get("/log-something", headers={"X-Request-ID": "req-00000001"})
        logging.getLogger("web.test").warning("outside any request")
    finally:
        logging.getLogger().removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    inside = next(x for x in lines if x["message"] == "something for a test")
    outside = next(x for x in lines if x["message"] == "outside any request")
    assert inside["request_id"] == "req-00000001" and inside["service"] == "web"
    assert outside["request_id"] == "-"


def test_log_and_metrics_settings_are_checked() -> None:
    base = {"SECRET_KEY": "x" * 40, "INSTANCE_DIR": "/tmp"}
    assert load_settings(base).log_format == "json"
    assert load_settings({**base, "LOG_FORMAT": "TEXT"}).log_format == "text"
    settings = load_settings({**base, "WORKER_METRICS_PORT": "9540", "METRICS_TOKEN": "t"})
    assert settings.worker_metrics_port == 9540 and settings.metrics_token == "t"
    for bad in ({"LOG_FORMAT": "xml"}, {"LOG_LEVEL": "LOUD"}, {"WORKER_METRICS_PORT": "0"}):
        with pytest.raises(ValueError):
            load_settings({**base, **bad})
