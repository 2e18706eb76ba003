"""The alerts' one shell (bot/alerts.py), the edit / remind timing every kind shares (bot/watch/rules.py)
and the one token issuer (bot/approval/tokens.py), against a real SQLite state store: no server, no Slack."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from bot.alerts import LEASE_NAME, AlertShell, alert_intervals
from bot.approval import tokens
from bot.approval.models import DetailsTarget, SessionTarget
from bot.config import parse_config
from bot.postgres.models import Category, Session
from bot.slack.outbox import outbox_for
from bot.state.incidents import Incidents
from bot.state.schema import targets
from bot.state.store import StateStore
from bot.watch.rules import OpenIncident, follow_up

pytestmark = pytest.mark.unit

T0 = datetime(2026, 12, 1, 1, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture
def store(tmp_path) -> Iterator[StateStore]:
    s = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    yield s
    s.close()


def session(pid: int, *, state: str = "active", cannot_signal: str | None = None,
            query_start: datetime = T0) -> Session:
    return Session(pid=pid, backend_start=T0 + timedelta(seconds=pid), user="u", database="d", application="a",
                   client_addr=None, state=state, wait_event_type=None, wait_event=None, query="SELECT 1",
                   blocked_by=(), blocking_count=0, categories=(Category.LONG_RUNNING,), query_secs=1.0,
                   xact_secs=1.0, state_secs=1.0, cannot_signal=cannot_signal, query_start=query_start,
                   xact_start=T0, state_change=T0)


def key(s: Session) -> str:
    return f"{s.pid}@{s.backend_start.isoformat(timespec='microseconds')}"


# --- one shell ------------------------------------------------------------------------------------


def test_one_lease_and_one_outbox_for_every_alert_with_hooks_in_order(store):
    cfg = parse_config({"environments": {
        "a": {"dsn": "host=x", "watch": {"channel": "C1", "check_every": "20s"}},
        "b": {"dsn": "host=y", "standbys": {"r1": "host=z"}, "lag_alert": {"channel": "C2", "check_every": "5s"}},
        "c": {"dsn": "host=w"}}})
    assert sorted(alert_intervals(cfg)) == [5.0, 20.0]
    shell = AlertShell(cfg, store, outbox_for(store, lambda: None), "host:1")
    assert shell.every == 5.0 and shell.lease.ttl == 7.5 and shell.lease.name == LEASE_NAME
    seen: list[str] = []
    shell.on_gain(lambda: seen.append("watch"))
    shell.on_gain(lambda: seen.append("lag"))
    shell.lease.renew()
    assert shell.is_leader() and seen == ["watch", "lag"]
    assert shell.outbox.may_send()  # the outbox sends while this instance leads, and only then
    # every incident write is fenced by that one row
    assert Incidents(store, LEASE_NAME, shell.holder).holds_lease()
    other = AlertShell(cfg, store, outbox_for(store, lambda: None), "host:2")
    other.lease.renew()
    assert not other.is_leader() and not other.outbox.may_send()
    shell.stop()
    other.lease.renew()
    assert other.is_leader()


def test_the_jobs_are_installed_once_whichever_watcher_comes_first(store):
    class Sched:
        def __init__(self) -> None:
            self.ids: list[str] = []

        def add_job(self, *_a, id: str, **_k) -> None:
            self.ids.append(id)

        def add_listener(self, *_a) -> None:
            pass

    cfg = parse_config({"environments": {"a": {"dsn": "host=x", "watch": {"channel": "C1"}}}})
    shell, sched = AlertShell(cfg, store, outbox_for(store, lambda: None), "host:1"), Sched()
    shell.install(sched)
    shell.install(sched)
    assert sched.ids == ["alerts:lease", "alerts:outbox"]


# --- edit / remind timing, every kind's -----------------------------------------------------------


def test_follow_up_edits_once_a_minute_or_at_once_for_an_acknowledge_and_reminds_until_acknowledged():
    inc = OpenIncident(id="i", kind="lag", key="", opened_at=0.0, last_update_at=0.0, last_reminder_at=0.0,
                       posted=True)
    assert not follow_up(inc, now=59.0, remind_every=900.0).edit
    assert follow_up(inc, now=60.0, remind_every=900.0).edit
    assert not follow_up(inc, now=899.0, remind_every=900.0).remind
    assert follow_up(inc, now=900.0, remind_every=900.0).remind
    acked = replace(inc, acked_by="U1")
    then = follow_up(acked, now=10.0, remind_every=900.0)
    assert then.ack_to_draw and then.edit and not then.due
    assert not follow_up(acked, now=5000.0, remind_every=900.0).remind
    assert not follow_up(replace(acked, ack_drawn=True), now=10.0, remind_every=900.0).edit
    unposted = replace(inc, posted=False, acked_by="U1")
    then = follow_up(unposted, now=10.0, remind_every=900.0)
    assert not then.ack_to_draw and not then.remind and not then.due  # a post is retried once a minute
    assert follow_up(unposted, now=60.0, remind_every=900.0).due


# --- one token issuer -----------------------------------------------------------------------------


def test_issue_gives_kill_tokens_to_signalable_sessions_and_details_to_every_one_in_one_write(store):
    a, b = session(1), session(2, cannot_signal="a superuser's session")
    got = tokens.issue(store, "prod", "primary", "C1", "U1", [a, b, a])
    assert set(got.kill) == {1} and set(got.details) == {1, 2}
    kill = store.get_target(got.kill[1])
    assert kill is not None and isinstance(kill.target, SessionTarget) and kill.channel == "C1"
    details = store.get_target(got.details[2])
    assert details is not None and isinstance(details.target, DetailsTarget)
    only = tokens.issue(store, "prod", "primary", "C1", None, [a, b], kill={2}, details=False,
                        actions=lambda s: ("cancel",))
    assert only.kill == {} and only.details == {}
    root = tokens.issue(store, "prod", "primary", "C1", None, [a], details=False, actions=lambda s: ("cancel",))
    stored = store.get_target(root.kill[1])
    assert stored is not None and isinstance(stored.target, SessionTarget) and stored.target.actions == ("cancel",)


def test_reissue_keeps_tokens_while_valid_and_issues_fresh_ones_when_the_session_moved_or_the_channel_differs(store):
    a, b = session(1), session(2)
    first, memory = tokens.reissue(store, "prod", "primary", "C1", [(key(a), a), (key(b), b)], {}, request_ttl=900.0)
    assert set(first.kill) == {1, 2} and set(first.details) == {1, 2}
    again, memory2 = tokens.reissue(store, "prod", "primary", "C1", [(key(a), a), (key(b), b)], memory,
                                    request_ttl=900.0)
    assert again == first and memory2 == memory
    moved = session(2, query_start=T0 + timedelta(seconds=5))  # a new query: the old snapshot is not it
    third, _ = tokens.reissue(store, "prod", "primary", "C1", [(key(a), a), (key(moved), moved)], memory,
                              request_ttl=900.0)
    assert third.kill[1] == first.kill[1] and third.kill[2] != first.kill[2]
    assert third.details == first.details
    elsewhere, _ = tokens.reissue(store, "prod", "primary", "C2", [(key(a), a)], memory, request_ttl=900.0)
    assert elsewhere.kill[1] != first.kill[1] and elsewhere.details[1] != first.details[1]
    # older than half the request TTL: it would not last until the next redraw
    with store.tx() as c:
        c.execute(update(targets).where(targets.c.token == first.kill[1]).values(created_at=0.0))
    old, _ = tokens.reissue(store, "prod", "primary", "C1", [(key(a), a)], memory, request_ttl=900.0)
    assert old.kill[1] != first.kill[1]
    off, kept = tokens.reissue(store, "prod", "primary", "C1", [(key(a), a)], memory, request_ttl=900.0, kill=False)
    assert off.kill == {} and off.details[1] == first.details[1] and kept[key(a)] == memory[key(a)]
