"""A closed state store is never opened again (a job still running when the bot stops)."""

from __future__ import annotations

import os

import pytest
from sqlalchemy import text

from bot.state.engine import StoreClosed
from bot.state.store import StateStore

pytestmark = pytest.mark.unit


def test_a_closed_store_refuses_new_connections_and_leaves_no_file_behind(tmp_path):
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    with store.read() as c:
        assert c.execute(text("SELECT 1")).scalar() == 1
    store.close()
    for name in os.listdir(tmp_path):  # what a test's temporary directory clean-up does
        os.unlink(tmp_path / name)

    with pytest.raises(StoreClosed), store.read():
        pass
    with pytest.raises(StoreClosed), store.tx():
        pass
    with pytest.raises(StoreClosed), store.engine.connect():  # the gateways' plain reads too
        pass
    assert os.listdir(tmp_path) == []
