"""Shared fixtures.

Harness fixtures first (importable as ``from tests.conftest import ...`` if needed); the bot's fixtures
follow below them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

from tests.harness.fake_slack import FakeSlack
from tests.harness.pgcluster import ClusterPair, start_pair

# CI (CI=true) runs the property tests on a fixed sequence of examples: a failure there is the same at
# every run and can be replayed; locally every run draws new examples (and keeps failing ones in
# .hypothesis/), which is where new counterexamples are found.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The version suite (``@pytest.mark.versions``, 6 PostgreSQL versions) runs only when ``-m`` names it
    (``make test-versions``): ``make test`` and a bare ``pytest`` run the normal suite on one version."""
    if "versions" in (config.getoption("markexpr", "") or ""):
        return
    kept = [i for i in items if i.get_closest_marker("versions") is None]
    if len(kept) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i.get_closest_marker("versions") is not None])
        items[:] = kept


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
