"""pytest fixtures for the loopback provider servers.

Use them with `pytest_plugins = ["tests.fakes.fixtures"]` in a conftest, or import the fixture
names into a test module.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import unavailable
from tests.fakes.smtp_server import FakeSmtp, start_fake_smtp
from tests.fakes.twilio_server import FakeTwilio, SpecMissing, start_fake_twilio


@pytest.fixture
def fake_twilio() -> Iterator[FakeTwilio]:
    """A Twilio-compatible server; skipped (failed under REQUIRE_SERVICES=1) without the spec."""
    try:
        fake = start_fake_twilio()
    except SpecMissing as exc:
        unavailable(str(exc))
    yield fake
    fake.stop()


@pytest.fixture
def fake_smtp() -> Iterator[FakeSmtp]:
    fake = start_fake_smtp()
    yield fake
    fake.stop()
