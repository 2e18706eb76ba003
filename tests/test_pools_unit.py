"""Fast tests of the per-host gate, the client-side deadline watchdog and the out-of-connections text."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from bot.postgres import pools
from bot.postgres.deadline import Watchdog
from bot.postgres.pools import (
    DatabaseUnavailable,
    OutOfConnections,
    _Gate,
    explain,
    is_out_of_slots,
    tcp_params,
)
from bot.render.common import esc
from bot.render.errors import unavailable

pytestmark = pytest.mark.unit


def test_gate_bounds_calls_in_flight_and_waiting():
    gate = _Gate(2)
    assert gate.enter(0.1) and gate.enter(0.1)
    started = time.monotonic()
    assert not gate.enter(0.2), "a third call waits, then is refused"
    assert 0.15 <= time.monotonic() - started < 1
    gate.leave()
    assert gate.enter(0.1)


def test_gate_refuses_at_once_when_enough_already_wait(monkeypatch):
    monkeypatch.setattr(pools, "HOST_WAITING", 2)
    gate = _Gate(1)
    assert gate.enter(0.1)
    waiters = [threading.Thread(target=gate.enter, args=(2.0,)) for _ in range(2)]
    for t in waiters:
        t.start()
    deadline = time.monotonic() + 2
    while gate.waiting < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    assert not gate.enter(5.0)
    assert time.monotonic() - started < 0.1, "no thread is held when the queue is full"
    gate.leave()
    for t in waiters:
        t.join(3)


def test_a_hung_host_gets_one_call_at_a_time_and_short_waits():
    gate = _Gate(3)
    gate.mark_hung()
    assert gate.enter(5.0)
    started = time.monotonic()
    assert not gate.enter(5.0)
    assert time.monotonic() - started < 0.5
    gate.mark_answering()
    assert gate.enter(0.1) and gate.enter(0.1)


def test_watchdog_runs_only_overdue_actions():
    dog = Watchdog()
    fired: list[str] = []
    late = dog.arm(0.05, lambda: fired.append("late"))
    early = dog.arm(5, lambda: fired.append("early"))
    time.sleep(0.3)
    assert dog.disarm(early) is True
    assert dog.disarm(late) is False
    assert fired == ["late"]


def test_a_late_disarm_waits_until_the_action_has_finished():
    dog = Watchdog()
    started, finished = threading.Event(), []

    def slow() -> None:
        started.set()
        time.sleep(0.3)
        finished.append("done")

    item = dog.arm(0.01, slow)
    assert started.wait(2)
    t0 = time.monotonic()
    assert dog.disarm(item) is False, "the action ran"
    assert finished == ["done"], "disarm returned before the action had finished"
    assert time.monotonic() - t0 >= 0.2
    # a deadline armed while a late disarm waits still fires on time
    fired = threading.Event()
    dog.arm(0.05, fired.set)
    assert fired.wait(1)


def test_out_of_connections_is_said_in_those_words():
    assert unavailable(OutOfConnections("prod", "primary", (137, 137))) == "`prod` is out of connections: 137 of 137 in use"
    exc = OutOfConnections("prod", "r1", None, "the bot's reserved connection is busy")
    assert unavailable(exc) == ("`prod` standby `r1` is out of connections: every connection slot is taken "
                                "(the bot's reserved connection is busy)")
    assert str(exc) == exc.plain == ("prod standby r1 is out of connections: every connection slot is taken "
                                     "(the bot's reserved connection is busy)")
    assert exc.env == "prod" and exc.host == "r1"


def test_refusals_for_lack_of_slots_are_recognised():
    full = psycopg.OperationalError('connection failed: FATAL:  sorry, too many clients already')
    reserved = psycopg.OperationalError("FATAL:  remaining connection slots are reserved for non-replication "
                                        "superuser connections")
    assert is_out_of_slots(full) and is_out_of_slots(reserved)
    assert not is_out_of_slots(psycopg.OperationalError("connection refused"))
    assert "out of connections" in explain(full)


def test_tcp_parameters_bound_a_silent_peer():
    p = tcp_params(5, 5)
    assert p["keepalives"] == 1 and p["tcp_user_timeout"] == 12000
    assert p["keepalives_idle"] + p["keepalives_interval"] * p["keepalives_count"] <= 30


def test_an_unavailable_server_quoted_in_an_outcome_detail_is_escaped_once_when_drawn():
    exc = DatabaseUnavailable("prod", "replica1", 'could not connect: "a & b" <x>')
    assert exc.plain == 'prod standby replica1 is unavailable: could not connect: "a & b" <x>'
    assert str(exc) == exc.plain  # the domain carries plain text
    shown = unavailable(exc)  # the mrkdwn form, for a message as it is (escaped in bot/render/ only)
    assert shown == "`prod` standby `replica1` is unavailable: could not connect: \"a &amp; b\" &lt;x&gt;"
    drawn = esc(f"nothing was done: {exc.plain}")
    assert "a &amp; b" in drawn and "&amp;amp;" not in drawn and "&lt;x&gt;" in drawn
    full = OutOfConnections("prod", "primary", (137, 137), "the bot's reserved connection is busy")
    assert full.plain == "prod is out of connections: 137 of 137 in use (the bot's reserved connection is busy)"
