"""The blocking forest, lock objects in words and the locks / Details renderers (pure, no servers)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from bot.commands import CommandError, ListSessions, ShowLocks, parse
from bot.config import parse_config
from bot.postgres.details import Details
from bot.postgres.locks import (
    LockGraph,
    LockObject,
    LockRef,
    Waiter,
    behind,
    blocker_levels,
    build_forest,
    roots_of,
)
from bot.postgres.models import Category, Session
from bot.render.details import details_view
from bot.render.locks import render_locks, shown_pids

pytestmark = pytest.mark.unit

NOW = datetime(2026, 12, 1, 0, 0, tzinfo=UTC)
HOSTILE = "<!channel> *bold* `tick` ```fence``` <https://x|y> &amp;"


def w(pid, *blockers, mode="ShareLock", locktype="transactionid", secs=1.0, rel=None):
    obj = LockObject(locktype, relation=16384 if rel else None, rel_name=rel, transactionid="777")
    return Waiter(pid, tuple(blockers), LockRef(mode, False, obj, secs))


def session(pid, app="app", query="SELECT 1", state="active", cannot=None):
    return Session(
        pid=pid, backend_start=NOW, user="u", database="d", application=app, client_addr=None, state=state,
        wait_event_type=None, wait_event=None, query=query, blocked_by=(), blocking_count=0,
        categories=(Category.BLOCKING,), query_secs=5.0, xact_secs=5.0, state_secs=5.0, cannot_signal=cannot,
    )


def test_three_level_chain_is_one_tree_rooted_at_the_top():
    waits = {20: w(20, 10, secs=9), 30: w(30, 20, secs=5), 40: w(40, 30, secs=2), 31: w(31, 20, secs=7)}
    forest = build_forest(waits)
    assert [t.root for t in forest] == [10]
    t = forest[0]
    assert (t.direct, t.total, t.longest_wait) == (1, 4, 9)
    assert t.lines() == [(1, 20), (2, 30), (3, 40), (2, 31)]
    assert blocker_levels(waits, 40) == [(30,), (20,), (10,)]
    assert roots_of(waits, 40) == (10,)
    assert behind(waits, 20) == (2, 3, 7)
    assert behind(waits, 40) == (0, 0, None)


def test_worst_root_first_then_longest_wait():
    waits = {2: w(2, 1, secs=1), 12: w(12, 11, secs=50), 13: w(13, 11, secs=1), 22: w(22, 21, secs=99)}
    assert [t.root for t in build_forest(waits)] == [11, 21, 1]


def test_waiter_with_two_blockers_counts_for_both_roots_and_cycle_gets_a_root():
    waits = {3: w(3, 1, 2)}
    forest = build_forest(waits)
    assert sorted(t.root for t in forest) == [1, 2] and all(t.total == 1 for t in forest)
    graph = LockGraph("prod", "primary", {p: session(p) for p in (1, 2, 3)}, waits, read_at=NOW)
    msg = render_locks(graph, forest, details_tokens={p: f"t{p}" for p in (1, 2, 3)}, kill_tokens={1: "k1", 2: "k2"})
    ids = [e["action_id"] for b in msg["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert len(ids) == len(set(ids)) and "pgs_details:t3" in ids  # drawn once although under two roots
    cycle = {5: w(5, 6), 6: w(6, 5), 7: w(7, 6)}
    forest = build_forest(cycle)
    assert len(forest) == 1 and forest[0].total == 2  # the other two of the cycle below its lowest pid


def test_ddl_queue_is_named():
    waits = {
        20: w(20, 10, mode="AccessExclusiveLock", locktype="relation", rel="public.t", secs=8),
        30: w(30, 20, mode="AccessShareLock", locktype="relation", rel="public.t"),
        31: w(31, 20, mode="RowExclusiveLock", locktype="relation", rel="public.t"),
    }
    t = build_forest(waits)[0]
    assert t.root == 10 and t.total == 3
    assert [(q.pid, q.behind) for q in t.ddl_queues] == [(20, 2)]
    graph = LockGraph("prod", "primary", {p: session(p) for p in (10, 20, 30, 31)}, waits, read_at=NOW)
    msg = render_locks(graph, [t], details_tokens={p: f"tok{p}" for p in (10, 20, 30, 31)},
                       kill_tokens={10: "k10"})
    text = json.dumps(msg)
    assert "DDL queue" in text and "pid 20 waits for `AccessExclusiveLock` on relation `public.t`" in text
    labels = [e["text"]["text"] for b in msg["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert {"Terminate 10", "Details 10", "Details 20", "Details 30", "Details 31"} <= set(labels)
    assert "Terminate 20" not in labels  # only roots get Cancel / Terminate


def test_nothing_waits_is_one_line():
    graph = LockGraph("prod", "replica1", {}, {}, read_at=NOW)
    msg = render_locks(graph, [])
    assert msg["text"] == "Nothing waits for a lock on prod / replica1 (standby)."
    assert len(msg["blocks"]) == 2


def test_caps_per_root_and_in_total_say_how_many_more():
    waits = {p: w(p, 1, secs=p) for p in range(100, 300)}
    waits.update({p: w(p, 2) for p in range(400, 403)})
    graph = LockGraph("prod", "primary", {p: session(p, query="x" * 500) for p in [1, 2, *waits]}, waits, read_at=NOW)
    forest = build_forest(waits)
    pids = shown_pids(forest)
    msg = render_locks(graph, forest, details_tokens={p: f"t{p}" for p in pids})
    assert len(msg["blocks"]) <= 50
    text = json.dumps(msg)
    assert "and 190 more waiting behind pid 1" in text and "200 in total" in text
    assert all(len(b["text"]["text"]) <= 3000 for b in msg["blocks"] if b["type"] == "section")


def test_advisory_and_other_objects_in_words():
    assert LockObject("advisory", classid=0, objid=42, objsubid=1).describe() == "advisory lock key 42"
    assert LockObject("advisory", classid=1, objid=2, objsubid=1).describe() == f"advisory lock key {(1 << 32) | 2}"
    assert LockObject("advisory", classid=7, objid=8, objsubid=2).describe() == "advisory lock keys (7, 8)"
    assert LockObject("tuple", relation=5, rel_name="s.t", page=0, tuple=3).describe() == "row (0,3) of relation s.t"
    assert (LockObject("relation", relation=99, lock_db="other").describe()
            == "relation 99 in database other (name not readable from the bot's database)")
    assert LockObject("virtualxid", virtualxid="3/12").describe() == "virtual transaction 3/12"


def _config():
    return parse_config({"environments": {"prod": {"dsn": "postgresql://x@h/db", "standbys": {"replica1": "postgresql://x@r/db"}}}},
                        environ={})


def test_parse_locks_commands():
    cfg = _config()
    assert parse("prod locks", cfg) == ShowLocks("prod")
    assert parse("prod replica1 locks", cfg) == ShowLocks("prod", "replica1")
    assert isinstance(parse("prod replica1", cfg), ListSessions)
    with pytest.raises(CommandError, match="takes no more words"):
        parse("prod locks now", cfg)
    with pytest.raises(CommandError):
        parse("prod nosuch locks", cfg)
    assert "locks" in parse.__globals__["USAGE"]


def _details(**shown):
    s = replace(session(1, app=HOSTILE), backend_type="client backend", user=HOSTILE, database=HOSTILE,
                client_addr="10.0.0.1", client_hostname=HOSTILE, client_port=5, wait_event_type="Lock",
                wait_event="transactionid", **shown)
    return Details("prod", "primary", 1, "ok", session=s, read_at=NOW,
                   locks=(LockRef("ExclusiveLock", True, LockObject("relation", rel_name=HOSTILE)),), locks_total=1)


def test_details_view_escapes_every_field_and_fits():
    view = details_view(_details(query=HOSTILE * 2000), kill_token="tok")
    assert len(view["blocks"]) <= 100
    for b in view["blocks"]:
        for t in [b.get("text", {}).get("text", "")] + [e.get("text", "") for e in b.get("elements", []) if e.get("type") == "mrkdwn"]:
            assert len(t) <= 3000
            body = t.replace("<!date^", "").split("|")[0] if t.startswith("Read <!date") else t
            assert "<!channel>" not in body and "<https" not in body
            if t.startswith("```"):
                assert t.count("```") == 2  # a fence in the query cannot close the block
    text = json.dumps(view)
    assert "&lt;!channel&gt;" in text
    assert "characters not shown" in text
    assert "waiting for another transaction to commit or roll back" in text
    labels = [e["text"]["text"] for b in view["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert labels == ["Cancel 1", "Terminate 1"]


def test_details_view_says_ended_or_reused_and_no_buttons_when_cannot():
    assert "has ended" in json.dumps(details_view(Details("prod", "primary", 7, "ended"), None))
    reused = json.dumps(details_view(Details("prod", "primary", 7, "reused", other_start=NOW), None))
    assert "now belongs to another backend" in reused
    d = _details()
    d = Details(**{**d.__dict__, "cannot_signal": "superuser session"})
    view = details_view(d, None)
    assert not [b for b in view["blocks"] if b["type"] == "actions"]
    assert "cannot cancel or terminate pid 1: superuser session" in json.dumps(view)
    aborted = json.dumps(details_view(_details(state="idle in transaction (aborted)"), None))
    assert "*aborted*" in aborted


def test_may_view_follows_the_channel_and_viewers_when_configured():
    from types import SimpleNamespace

    from bot.approval.policy import Policy
    from bot.approval.ports import UserFacts
    from bot.slack.details_handlers import may_view

    def rt(channels=None, viewers=("*",)):
        access = SimpleNamespace(channels=channels, viewers=list(viewers))
        envs = {"prod": SimpleNamespace(access=access)}
        directory = SimpleNamespace(allowed=lambda user, principals: "*" in principals or user in principals,
                                    # a full member (issue 23 §13: guests and other organisations see no Details)
                                    user_facts=lambda user: UserFacts(user, "T1", guest=False, external=False))
        config = SimpleNamespace(env=envs.get)
        return SimpleNamespace(config=config, directory=directory, policy=Policy(config, directory))

    assert may_view(rt(), "prod", "U1", "C1") is None
    assert "can only be viewed in <#C9>" in may_view(rt(channels=["C9"]), "prod", "U1", "C1")
    assert may_view(rt(channels=["C9"]), "prod", "U1", "C9") is None
    assert "access.viewers" in may_view(rt(viewers=["U7"]), "prod", "U1", "C1")
    assert may_view(rt(viewers=["U7"]), "prod", "U7", "C1") is None
    assert "no longer configured" in may_view(rt(), "gone", "U1", "C1")


def test_replay_waiting_for_a_lock_on_a_standby_is_said():
    startup = session(99, app="", query="")
    startup = Session(**{**{f: getattr(startup, f) for f in Session.__slots__},
                         "wait_event_type": "Lock", "wait_event": "relation", "state": None, "backend_type": "startup"})
    graph = LockGraph("prod", "replica1", {99: startup}, {}, read_at=NOW)
    msg = render_locks(graph, build_forest(graph.waits))
    assert msg["text"] == "No session waits for a lock on prod / replica1 (standby), but replay does."
    assert "/pgsessions prod lag" in json.dumps(msg)
