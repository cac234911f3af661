"""Fixtures of the Twitter tests: a fake X server per test, serving this directory's fixtures/."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.channels.twitter.fake_x import FakeX


@pytest.fixture
def fake() -> Iterator[FakeX]:
    server = FakeX.from_fixtures()
    server.start()
    yield server
    server.stop()
