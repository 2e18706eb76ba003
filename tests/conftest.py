"""Shared fixtures.

Harness fixtures first (importable as ``from tests.conftest import ...`` if needed); the bot's fixtures
follow below them.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness.fake_slack import FakeSlack
from tests.harness.pgcluster import ClusterPair, start_pair

# ---- harness fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg() -> Iterator[ClusterPair]:
    """A PostgreSQL primary + streaming hot standby for the whole session (or the external servers
    named by PGSESSIONS_TEST_PRIMARY_DSN / PGSESSIONS_TEST_STANDBY_DSN)."""
    pair = start_pair()
    try:
        yield pair
    finally:
        pair.stop()


@pytest.fixture
def fake_slack() -> Iterator[FakeSlack]:
    """A fresh fake Slack Web API (token "xoxb-test") on 127.0.0.1 for one test."""
    fake = FakeSlack(token="xoxb-test").start()
    fake.reset()
    try:
        yield fake
    finally:
        fake.stop()


# ---- bot fixtures ---------------------------------------------------------------------------------
