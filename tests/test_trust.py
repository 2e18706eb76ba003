"""An approval acts only on what the approver saw (issue 12 §1–§3).

Every test drives the real bot over signed HTTP against real PostgreSQL and the fake Slack Web API:
a session that moved on after it was listed is never signalled, old buttons stop working, authority
is re-checked at every step and fails closed, and an outcome is never lost after a signal.
"""

from __future__ import annotations

import json
import threading
import time
import uuid

import psycopg
import pytest
from sqlalchemy import text as sqltext

from tests.harness.bot import BotUnderTest, env_config
from tests.harness.flows import (
    answer_with,
    click,
    find_button,
    post_listing,
    request_kill,
    wait_state,
    wait_until,
)


def cfg(pg, **access):
    env = env_config(pg, access={"requesters": ["*"], "approvers": ["U2", "S0DBAS"], **access})
    return {"environments": {"test": env}}


@pytest.fixture
def bot(pg, fake_slack):
    fake_slack.usergroups = {"S0DBAS": ["U7", "U8"]}
    b = BotUnderTest(cfg(pg), fake_slack).start()
    yield b
    b.close()


class Conns:
    """Application connections opened by one test (terminated and closed at its end)."""

    def __init__(self, pg):
        self.pg = pg
        self.conns: list[psycopg.Connection] = []
        self.threads: list[threading.Thread] = []

    def open(self, prefix: str) -> tuple[psycopg.Connection, str]:
        app = f"{prefix}-{uuid.uuid4().hex[:8]}"
        conn = self.pg.primary.connect(user="app_user", dbname="appdb", application_name=app)
        self.conns.append(conn)
        return conn, app

    def run(self, conn: psycopg.Connection, sql: str) -> dict:
        """Run ``sql`` on ``conn`` in a thread; the dict gets "error" if it fails, "done" when it ends."""
        out: dict = {}

        def go():
            try:
                conn.execute(sql)
            except psycopg.Error as exc:
                out["error"] = exc
            out["done"] = True

        t = threading.Thread(target=go, daemon=True)
        t.start()
        self.threads.append(t)
        return out

    def close(self) -> None:
        for c in self.conns:
            try:
                self.pg.primary.sql("SELECT pg_terminate_backend(%s)", (c.info.backend_pid,))
            except Exception:
                pass
        for t in self.threads:
            t.join(5)
        for c in self.conns:
            c.close()


@pytest.fixture
def conns(pg):
    c = Conns(pg)
    yield c
    c.close()


def alive(pg, pid: int) -> bool:
    return bool(pg.primary.sql("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)))


def activity(pg, pid: int) -> tuple:
    rows = pg.primary.sql("SELECT state, query FROM pg_stat_activity WHERE pid = %s", (pid,))
    return rows[0] if rows else (None, None)


def wait_active(pg, pid: int, needle: str) -> None:
    wait_until(lambda: activity(pg, pid)[0] == "active" and needle in (activity(pg, pid)[1] or ""), 10,
               f"pid {pid} running {needle}")


def events_of(bot, msg=None) -> list[str]:
    """The audit events of this test's bot (each test has its own state store)."""
    return [e["event"] for e in bot.rt.store.audit_entries(limit=100)]


# --- §1: the approval covers the session as it was shown --------------------------------------------


def test_cancel_after_listed_query_finished_leaves_the_next_query_alone(bot, pg, conns):
    conn, app = conns.open("pool")
    pid = conn.info.backend_pid
    first = conns.run(conn, "SELECT pg_sleep(2.5) /* Q1 */")
    wait_active(pg, pid, "Q1")
    msg = request_kill(bot, "test", app, pid, "Cancel")
    body = json.dumps(msg.blocks)
    assert "*listed* <!date^" in body and "after the listing" in body, "the request says when it was listed"
    wait_until(lambda: first.get("done"), 10, "Q1 finished by itself")
    second = conns.run(conn, "SELECT pg_sleep(30) /* Q2 */")
    wait_active(pg, pid, "Q2")
    click(bot, msg, "Approve", "U2")
    done = wait_state(bot, msg, "*Not done*")
    text = json.dumps(done.blocks)
    assert "nothing was signalled" in text and "moved on" in text and "/pgsessions test" in text, text
    assert "*active*" in text, "the message says what the session is doing now"
    time.sleep(0.3)
    assert "error" not in second and not second.get("done"), "the second query was cancelled"
    assert activity(pg, pid)[0] == "active" and "Q2" in activity(pg, pid)[1]
    assert "cancel:moved" in events_of(bot, msg)
    assert "cancel:executed" not in events_of(bot, msg)


def test_cancel_of_the_listed_query_still_works(bot, pg, conns):
    """The binding is not over-strict: the very query that was listed is cancelled."""
    conn, app = conns.open("sleeper")
    pid = conn.info.backend_pid
    running = conns.run(conn, "SELECT pg_sleep(30) /* Q1 */")
    wait_active(pg, pid, "Q1")
    msg = request_kill(bot, "test", app, pid, "Cancel")
    click(bot, msg, "Approve", "U2")
    wait_state(bot, msg, "*Done*")
    wait_until(lambda: running.get("done"), 10, "the listed query was cancelled")
    assert isinstance(running.get("error"), psycopg.errors.QueryCanceled)


def test_terminate_of_listed_idle_session_that_became_active_leaves_it_alone(bot, pg, conns):
    conn, app = conns.open("idle")
    pid = conn.info.backend_pid
    conn.execute("SELECT 1")
    msg = request_kill(bot, "test", app, pid, "Terminate")
    busy = conns.run(conn, "SELECT pg_sleep(3) /* busy now */")
    wait_active(pg, pid, "busy now")
    click(bot, msg, "Approve", "U2")
    done = wait_state(bot, msg, "*Not done*")
    text = json.dumps(done.blocks)
    assert "moved on from the idle session that was listed" in text and "*active*" in text, text
    assert alive(pg, pid)
    wait_until(lambda: busy.get("done"), 10, "the query ran to its end")
    assert "error" not in busy
    assert "terminate:moved" in events_of(bot, msg)


def test_terminate_of_listed_idle_session_used_since_leaves_it_alone(bot, pg, conns):
    """Idle again, but used in between (state_change moved): not the session the approver saw."""
    conn, app = conns.open("idle")
    pid = conn.info.backend_pid
    conn.execute("SELECT 1")
    msg = request_kill(bot, "test", app, pid, "Terminate")
    conn.execute("SELECT 2")
    click(bot, msg, "Approve", "U2")
    done = wait_state(bot, msg, "*Not done*")
    assert "*idle* since" in json.dumps(done.blocks)
    assert alive(pg, pid)


def test_moved_on_idle_in_transaction_session_is_not_terminated(bot, pg, conns):
    conn, app = conns.open("idletx")
    pid = conn.info.backend_pid
    conn.execute("BEGIN")
    conn.execute("SELECT 1")
    msg = request_kill(bot, "test", app, pid, "Terminate")
    conn.execute("COMMIT")
    conn.execute("BEGIN")
    conn.execute("SELECT 2")
    click(bot, msg, "Approve", "U2")
    done = wait_state(bot, msg, "*Not done*")
    text = json.dumps(done.blocks)
    assert "moved on from the transaction that was listed" in text and "in a transaction that started" in text
    assert alive(pg, pid)
    conn.execute("COMMIT")


def test_same_transaction_still_open_is_terminated(bot, pg, conns):
    """Another statement in the SAME transaction keeps xact_start: the approved terminate goes ahead."""
    conn, app = conns.open("idletx")
    pid = conn.info.backend_pid
    conn.execute("BEGIN")
    conn.execute("SELECT 1")
    msg = request_kill(bot, "test", app, pid, "Terminate")
    conn.execute("SELECT 2")
    click(bot, msg, "Approve", "U2")
    wait_state(bot, msg, "*Done*")
    wait_until(lambda: not alive(pg, pid), 5, "terminated")


def test_old_listing_button_says_to_list_again(bot, pg, conns):
    conn, app = conns.open("old")
    pid = conn.info.backend_pid
    conn.execute("SELECT 1")
    msg = post_listing(bot, f"test --app {app} --min 0s")
    button = find_button(msg, f"Terminate {pid}")
    ttl = bot.rt.config.environments["test"].access.request_ttl
    with bot.rt.store.tx() as c:
        c.execute(sqltext("UPDATE pgs_targets SET created_at = created_at - :age WHERE token = :t"),
                  {"age": ttl + 5, "t": button["value"]})
    bot.slack.block_action(button["action_id"], button["value"], user_id="U1", message=msg)
    answer = answer_with(bot.fake, "for a fresh listing")
    assert "/pgsessions test" in answer.text and "access.request_ttl" in answer.text
    assert not bot.fake.calls_for("views.open")
    assert alive(pg, pid)


@pytest.mark.unit
def test_lag_alert_reuses_a_token_only_while_young_and_unchanged():
    """A living lag alert keeps a culprit's button only while its snapshot still matches the session."""
    from datetime import UTC, datetime, timedelta

    from bot.approval.targets import reusable_token, session_snapshot
    from bot.postgres.models import Category, Session

    t0 = datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)
    s = Session(pid=7, backend_start=t0, user="u", database="d", application="a", client_addr=None,
                state="idle in transaction", wait_event_type=None, wait_event=None, query="SELECT 1",
                blocked_by=(), blocking_count=1, categories=(Category.IDLE_TX,), query_secs=5.0,
                xact_secs=9.0, state_secs=5.0, query_start=t0, xact_start=t0, state_change=t0)
    target = {"created_at": 1000.0, "payload": session_snapshot(s, listed_at=1000.0)}
    assert reusable_token(target, s, request_ttl=900, now=1100.0)
    assert not reusable_token(target, s, request_ttl=900, now=1000.0 + 451), "too old to survive the next update"
    moved = Session(**{**{f: getattr(s, f) for f in s.__slots__}, "xact_start": t0 + timedelta(microseconds=1)})
    assert not reusable_token(target, moved, request_ttl=900, now=1100.0), "another transaction: fresh token"
    assert not reusable_token(None, s, request_ttl=900, now=1100.0)
