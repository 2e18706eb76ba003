"""The one session type (issue 22 §1): every reader builds bot.postgres.models.Session with one builder."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bot.approval.models import DetailsTarget, SessionRef, SessionTarget
from bot.approval.targets import session_ref, session_snapshot
from bot.lagwatch.detect import pick_culprits
from bot.lagwatch.model import Reason
from bot.postgres.activity import _session
from bot.postgres.models import AUTOVACUUM_WORKER, CLIENT_BACKEND, Category, Session, iso
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


def test_every_stored_snapshot_of_a_session_is_built_by_one_function():
    """session_ref is the one way a Session becomes a stored SessionRef: the bulk snapshots (a listing's and
    the watch's Terminate these N, clear-db) are it, and a Cancel / Terminate or Details snapshot is it plus
    what a button adds; the two button snapshots differ only in their kind."""
    listed = _session(listing_row())
    watched = session_from_row(as_json(row()), False, True)
    T1 = T0.replace(second=9)
    refs = [session_ref(s, state_change=T1, changed_after_listing=True) for s in (listed, watched)]
    assert refs[0] == refs[1]
    assert refs[0] == SessionRef(
        pid=42, backend_start=iso(T0), state_change=iso(T1), changed_after_listing=True, user="app",
        database="shop", application="web", client_addr="10.0.0.1", state="idle in transaction", state_secs=4.0,
        cannot_signal=None, in_transaction=True)
    assert refs[0].query is None  # a bulk snapshot keeps no query text (clear-db reads it unredacted)
    # clear-db binds no state: its terminate acts whatever the session does after the listing
    assert session_ref(listed).state_change is None
    kill = session_snapshot(listed, 0.0)
    details = session_snapshot(listed, 0.0, kind=DetailsTarget)
    assert (type(kill), type(details)) == (SessionTarget, DetailsTarget)
    assert kill.model_dump(exclude={"kind"}) == details.model_dump(exclude={"kind"})
    ref_part = kill.model_dump(include=set(SessionRef.model_fields) - {"query", "query_start", "xact_start"})
    assert ref_part == session_ref(listed, state_change=listed.state_change).model_dump(
        exclude={"query", "query_start", "xact_start"})
    assert (kill.query, kill.query_start, kill.xact_start) == ("UPDATE t SET x = 1", iso(T0), iso(T0))


def test_clear_db_reads_the_one_session_type():
    """A row of clear_db_sessions.sql (pg_stat_activity's names) is a Session: the bot's own connection,
    how long it is connected, whether it is in a transaction (what its snapshot keeps)."""
    r = {"pid": 7, "backend_start": T0, "backend_type": CLIENT_BACKEND, "usename": "app", "datname": "shop",
         "application_name": "pgsessions", "client_addr": None, "state": "idle", "query": "SELECT 1",
         "xact_start": None, "backend_secs": 600.0, "state_secs": 60.0, "is_bot": True, "is_superuser": False,
         "bot_is_super": False, "bot_can_signal": True, "bot_has_privs": True}
    own = Session.from_row(r)
    assert (own.is_bot, own.is_client, own.backend_secs, own.database, own.cannot_signal) == (
        True, True, 600.0, "shop", None)
    assert session_ref(own).in_transaction is False
    assert session_ref(Session.from_row({**r, "xact_start": T0})).in_transaction is True
    assert Session.from_row({**r, "is_bot": False}).is_bot is False
