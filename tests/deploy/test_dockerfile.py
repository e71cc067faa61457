"""The Dockerfile's build steps checked against the checkout (no engine builds images on the
test machines): every file it copies exists and reaches the build context, and the API docs
viewer it takes from the Node stage is what the npm lock installs as a runtime package."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "Dockerfile"


def _instructions() -> list[list[str]]:
    """Each instruction as words, continuation lines joined and comments dropped."""
    text = "\n".join(
        line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#")
    )
    return [shlex.split(line) for line in text.replace("\\\n", " ").splitlines() if line.strip()]


def _ignored(path: str) -> bool:
    patterns = [
        line.strip()
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(fnmatch.fnmatch(prefix, pattern) for pattern in patterns for prefix in prefixes)


def test_every_file_copied_from_the_context_exists_and_is_not_ignored() -> None:
    copies = [words for words in _instructions() if words[0] == "COPY"]
    sources = [
        source
        for words in copies
        if not any(word.startswith("--from=") for word in words)
        for source in words[1:-1]
    ]
    assert "pyproject.toml" in sources and "migrations" in sources
    for source in sources:
        assert (REPO_ROOT / source).exists(), source
        assert not _ignored(source), f"{source} is left out of the build context"


def test_the_api_docs_viewer_comes_from_the_npm_lock() -> None:
    instructions = _instructions()
    npm = next(words for words in instructions if words[:3] == ["RUN", "npm", "ci"])
    assert "--ignore-scripts" in npm
    # Installed without dev packages: the viewer must be a runtime dependency of package.json.
    assert "--omit=dev" in npm
    assert "swagger-ui-dist" in json.loads((REPO_ROOT / "package.json").read_text())["dependencies"]
    (copy,) = [w for w in instructions if w[0] == "COPY" and "--from=frontend" in w]
    *sources, destination = copy[2:]
    makefile = (REPO_ROOT / "Makefile").read_text()
    vendor_dir = re.search(r"^SWAGGER_UI_DIR := (\S+)$", makefile, re.MULTILINE)[1]
    # The image puts the files where `make` puts them locally, in the package's build tree.
    assert destination == f"/src/{vendor_dir}/"
    for source in sources:
        local = REPO_ROOT / source.removeprefix("/build/")
        assert local.is_file(), f"{source}: not installed by `npm ci` from package-lock.json"
        assert (REPO_ROOT / vendor_dir / local.name).is_file()
        assert local.name in makefile
