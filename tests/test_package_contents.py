"""The installed package (the Docker image installs a wheel, not the checkout) carries every
file the app reads at run time: page templates, static files with the API docs viewer, message
templates and the simulation's scenario schema."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
# Folders of files read at run time, and the kinds of file in them.
RUNTIME_FILES = {
    "web/templates": "*",
    "web/static": "*",
    "notifications/templates": "*",
    "scheduler/simulation": "*.json",
}
# Copied from node_modules by `make` (and by the image's node stage); served by the docs page.
VIEWER_FILES = (
    "web/static/vendor/swagger-ui/swagger-ui-bundle.js",
    "web/static/vendor/swagger-ui/swagger-ui.css",
)


# What the Dockerfile copies into its build tree before `pip install /src`.
BUILD_TREE_FILES = ("pyproject.toml", "config.py", "bootstrap.py", "worker.py")
BUILD_TREE_FOLDERS = ("scheduler", "notifications", "web")


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    # Built from a copy laid out as the image's build tree: the build's scratch folders stay
    # out of the checkout, and two test processes never build in one folder.
    src = tmp_path_factory.mktemp("src")
    for name in BUILD_TREE_FILES:
        shutil.copy2(REPO_ROOT / name, src / name)
    for name in BUILD_TREE_FOLDERS:
        shutil.copytree(
            REPO_ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--quiet",
            "--wheel-dir",
            str(out),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = out.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def _tracked_runtime_files() -> list[str]:
    found = []
    for folder, pattern in RUNTIME_FILES.items():
        for path in sorted((REPO_ROOT / folder).rglob(pattern)):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".py":
                found.append(path.relative_to(REPO_ROOT).as_posix())
    return found


def test_every_runtime_file_is_in_the_wheel(wheel_names: set[str]) -> None:
    expected = _tracked_runtime_files()
    # The folders are not empty: a wrong path here would make the check vacuous.
    for folder in RUNTIME_FILES:
        assert any(name.startswith(folder + "/") for name in expected), folder
    assert "web/templates/base.html" in expected
    missing = [name for name in expected if name not in wheel_names]
    assert missing == []


def test_the_api_docs_viewer_is_in_the_wheel(wheel_names: set[str]) -> None:
    for name in VIEWER_FILES:
        assert (REPO_ROOT / name).is_file(), f"{name} missing: run `make node_modules/.installed`"
        assert name in wheel_names
