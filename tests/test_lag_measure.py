"""The lag measurement brought up to date (issue 14: lag alerts get faster): pure, no server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.lagwatch.detect import as_of, fresh_replay_lag
from bot.lagwatch.model import PrimaryView

pytestmark = pytest.mark.unit

T = datetime(2026, 12, 1, 1, 0, 0, tzinfo=UTC)


def view(replay_lag, behind=1000, at=T) -> PrimaryView:
    return PrimaryView(measured_at=at, application_name="replica1", slot_name="s", state="streaming",
                       sync_state="async", client_addr=None, replay_lag=replay_lag, write_lag=0.0, flush_lag=0.0,
                       behind_bytes=behind, current_lsn="0/10", replay_lsn="0/5")


def test_replay_lag_grows_by_the_time_since_the_standby_last_reported_while_behind():
    # the standby reported 8 s ago (wal_receiver_status_interval 10 s): the lag is 8 s more than it says
    assert fresh_replay_lag(2.0, 5000, T - timedelta(seconds=8), T) == 10.0
    assert fresh_replay_lag(2.0, 0, T - timedelta(seconds=8), T) == 2.0, "caught up: nothing grows"
    assert fresh_replay_lag(None, 5000, T - timedelta(seconds=8), T) is None, "NULL stays unknown"
    assert fresh_replay_lag(2.0, 5000, T + timedelta(seconds=1), T) == 2.0, "a reply 'after' the read adds nothing"


def test_the_view_is_aged_to_the_standby_reading_but_never_past_the_standby_own_bound():
    later = T + timedelta(seconds=3)
    assert as_of(view(4.0), 60.0, later).replay_lag == 7.0
    assert as_of(view(4.0), 5.0, later).replay_lag == 5.0, "capped by the age of the last replayed transaction"
    assert as_of(view(4.0, behind=0), 60.0, later).replay_lag == 4.0
    assert as_of(view(None), 60.0, later).replay_lag is None
    assert as_of(None, 60.0, later) is None
