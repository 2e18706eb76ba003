"""The one session type (issue 22 §1): every reader builds bot.postgres.models.Session with one builder."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bot.approval.targets import session_snapshot
from bot.lagwatch.detect import pick_culprits
from bot.lagwatch.model import Reason
from bot.postgres.activity import _session
from bot.postgres.models import AUTOVACUUM_WORKER, CLIENT_BACKEND, Category, Session
from bot.watch.model import session_facts, session_from_row

pytestmark = pytest.mark.unit

T0 = datetime(2026, 12, 1, 1, 0, 0, 123456, tzinfo=UTC)


def row(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {
        "pid": 42, "backend_start": T0, "backend_type": CLIENT_BACKEND, "usename": "app", "datname": "shop",
        "application_name": "web", "client_addr": "10.0.0.1", "state": "idle in transaction",
        "wait_event_type": None, "wait_event": None, "query": "UPDATE t SET x = 1", "query_start": T0,
        "xact_start": T0, "state_change": T0, "query_secs": 5.0, "xact_secs": 9.0, "state_secs": 4.0,
        "backend_xmin": "700", "xmin_age": 12, "is_superuser": False, "bot_has_privs": True,
    }
    base.update(kw)
    return base


def listing_row(**kw: object) -> dict[str, object]:
    return row(blocked_by=[], blocking_count=0, is_idle_tx=True, is_long_running=False, is_blocked=False,
               is_idle=False, bot_is_super=False, bot_can_signal=True, **kw)


def as_json(r: dict[str, object]) -> dict[str, object]:
    """What the watch's statements return: timestamps as ISO text inside JSON."""
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in r.items()}


def test_every_reader_builds_the_same_session_with_one_identity():
    listed = _session(listing_row())
    watched = session_from_row(as_json(row()), False, True)
    (culprit,), _ = pick_culprits(Reason.SNAPSHOT, [row(holds_lock=False, old_snapshot=True, xmin_behind=3,
                                                        bot_is_super=False, bot_can_signal=True)])
    for s in (listed, watched, culprit.session):
        assert isinstance(s, Session)
        assert s.key == "42@2026-12-01T01:00:00.123456+00:00"
        assert (s.backend_start, s.xact_start, s.state_change) == (T0, T0, T0)  # ISO text parsed to the microsecond
        assert (s.user, s.database, s.application, s.xmin_age) == ("app", "shop", "web", 12)
    assert culprit.key == watched.key
    # what a token stands for is the same whichever reader showed the session
    binding = ("pid", "backend_start", "query_start", "xact_start", "state_change", "idle_in_transaction")
    snaps = [session_snapshot(s, listed_at=0.0) for s in (listed, watched)]
    assert [tuple(getattr(x, k) for k in binding) for x in snaps] == [
        (42, "2026-12-01T01:00:00.123456+00:00", *["2026-12-01T01:00:00.123456+00:00"] * 3, True)] * 2
    assert snaps[0].categories == snaps[1].categories == (Category.IDLE_TX.value,)


def test_the_watch_gives_the_bots_facts_once_and_keeps_what_it_cannot_read():
    sup = session_from_row(as_json(row(is_superuser=True)), False, True)
    assert sup.cannot_signal and "superuser session" in sup.cannot_signal
    assert session_from_row(as_json(row(is_superuser=True)), True, False).cannot_signal is None
    av = session_from_row(as_json(row(backend_type=AUTOVACUUM_WORKER, query="autovacuum: VACUUM t")), False, True)
    assert av.is_autovacuum and not av.is_client and av.cannot_signal
    # a blocker the bot's role may not read: no start, no type; it stays, without an identity to act on
    hidden = session_from_row({"pid": 7, "backend_start": None, "backend_type": None, "query": None}, False, True)
    assert (hidden.backend_start, hidden.backend_type, hidden.is_client, hidden.key) == (None, None, False, "7@None")
    with pytest.raises(ValueError):
        _ = hidden.started


def test_what_an_incident_keeps_of_a_session():
    s = session_from_row(as_json(row(state="active", wait_mode="AccessExclusiveLock", wait_relation="t",
                                     wait_secs=3.5, xid_age=20)), False, True)
    assert s.categories == (Category.LONG_RUNNING,) and s.horizon_age == 20
    assert session_facts(s) == {
        "pid": 42, "backend_start": "2026-12-01T01:00:00.123456+00:00", "user": "app", "database": "shop",
        "application": "web", "client_addr": "10.0.0.1", "state": "active", "query": "UPDATE t SET x = 1",
        "query_secs": 5.0, "xact_secs": 9.0, "state_secs": 4.0, "wait_secs": 3.5,
        "wait_mode": "AccessExclusiveLock", "wait_relation": "t", "cannot_signal": None,
        "backend_type": CLIENT_BACKEND,
    }
