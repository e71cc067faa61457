"""The API documentation page: Swagger UI from the app's own static files, or how to get it."""

from __future__ import annotations

from pathlib import Path

from flask import Flask
from flask.testing import FlaskClient

from web.api.openapi import SWAGGER_UI_DIR, SWAGGER_UI_FILES


def test_the_docs_page_loads_the_viewer_from_the_apps_static_files(
    app: Flask, client: FlaskClient, tmp_path: Path
) -> None:
    static = tmp_path / "static"
    (static / SWAGGER_UI_DIR).mkdir(parents=True)
    for name in SWAGGER_UI_FILES:
        (static / SWAGGER_UI_DIR / name).write_text("/* stand-in */")
    app.static_folder = str(static)
    response = client.get("/api/docs")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert f'src="/static/{SWAGGER_UI_DIR}/swagger-ui-bundle.js"' in page
    assert 'src="/static/api-docs.js"' in page
    assert 'data-spec-url="/api/openapi.json"' in page
    # Nothing inline for the Content-Security-Policy to block.
    assert "<script>" not in page and "<style" not in page and " style=" not in page
    assert "not installed" not in page


def test_without_the_viewer_the_docs_page_says_how_to_install_it(
    app: Flask, client: FlaskClient, tmp_path: Path
) -> None:
    app.static_folder = str(tmp_path)  # a checkout where `make` has not copied the viewer
    response = client.get("/api/docs")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "The documentation viewer is not installed" in page
    assert "make node_modules/.installed" in page
    assert "swagger-ui-bundle.js" not in page
    assert 'href="/api/openapi.json"' in page
    assert client.get("/api/openapi.json").get_json()["openapi"].startswith("3.1")
