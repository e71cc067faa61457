"""The hash-pinned locks agree with pyproject.toml, so installing from them installs what the
project declares (run `make lock` after changing a dependency)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUN_LOCK = ROOT / "requirements" / "run.lock"
DEV_LOCK = ROOT / "requirements" / "dev.lock"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")


def _name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared(group: str | None) -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = project["dependencies"] if group is None else project["optional-dependencies"][group]
    pins = {}
    for spec in specs:
        match = PIN.match(spec)
        assert match, f"{spec!r}: pyproject.toml pins every direct dependency exactly"
        pins[_name(match.group(1))] = match.group(2)
    return pins


def _locked(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        match = PIN.match(line)
        if match:
            pins[_name(match.group(1))] = match.group(2)
    return pins


@pytest.mark.parametrize(
    ("lock", "groups"), [(RUN_LOCK, [None]), (DEV_LOCK, [None, "dev"])], ids=["run", "dev"]
)
def test_every_direct_dependency_is_locked_at_its_pinned_version(
    lock: Path, groups: list[str | None]
) -> None:
    locked = _locked(lock)
    for group in groups:
        for name, version in _declared(group).items():
            found = locked.get(name)
            assert found == version, f"{name} {version} in pyproject, {found} in the lock"


def test_the_runtime_lock_holds_no_dev_tool() -> None:
    locked = _locked(RUN_LOCK)
    for tool in ("pytest", "ruff", "hypothesis", "schemathesis", "playwright", "pip-tools"):
        assert tool not in locked, tool


def test_both_locks_agree_on_every_package_they_share() -> None:
    run, dev = _locked(RUN_LOCK), _locked(DEV_LOCK)
    assert set(run) <= set(dev), set(run) - set(dev)
    assert {n: v for n, v in run.items() if dev[n] != v} == {}


@pytest.mark.parametrize("lock", [RUN_LOCK, DEV_LOCK], ids=["run", "dev"])
def test_every_locked_package_has_hashes_and_no_local_source(lock: Path) -> None:
    text = lock.read_text()
    # Each requirement is one logical line: joined, every one must carry a sha256 hash.
    entries = [e for e in re.split(r"\n(?=[A-Za-z0-9])", text) if PIN.match(e)]
    assert entries
    for entry in entries:
        assert "--hash=sha256:" in entry, entry.splitlines()[0]
    # A lock made with a machine's own find-links or extra index would not install elsewhere.
    assert "--find-links" not in text and "index-url" not in text and "file://" not in text
