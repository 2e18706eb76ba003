"""Issue 25 without servers: parsing PgBouncer's SHOW output, matching server sessions to poolers, the
pool_waiting rule, the renderers (hostile names) and the `pool` command's parsing."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bot.commands import CommandError, ShowPools, parse
from bot.config import Pooler, parse_config
from bot.postgres import pgbouncer
from bot.postgres.models import Category, Session
from bot.postgres.pgbouncer import PoolerRead, client_row, parse_version, pool_rows, server_row
from bot.render.common import esc
from bot.render.pooler import pooler_notes_text, via_line
from bot.render.watch import render_alert
from bot.watch.model import POOL_WAITING, HostSnapshot, session_from_row
from bot.watch.pool_rules import HOLDERS, READS, pool_waiting, without_pool_members
from bot.watch.rules import Condition

pytestmark = pytest.mark.unit

HOSTILE = "<!channel> *b* `tick` <https://evil.example|x>"
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def server(pid: int, link: str = "", port: int = 50000 + 1, ptr: str = "0xs") -> dict:
    return {"type": "S", "user": "app_user", "database": "appdb", "state": "active" if link else "idle",
            "addr": "10.0.0.9", "port": 5432, "local_addr": "10.0.0.5", "local_port": port,
            "connect_time": "2026-12-07 11:00:00 UTC", "request_time": "2026-12-07 11:59:00 UTC", "wait": 0,
            "wait_us": 0, "close_needed": 0, "ptr": ptr, "link": link, "remote_pid": pid, "tls": "",
            "application_name": "billing"}


def client(ptr: str, link: str, cid: int | None, app: str = "billing", port: int = 41000, wait: int = 0) -> dict:
    row = {"type": "C", "user": "app_user", "database": "appdb", "state": "active", "addr": "192.0.2.7",
           "port": port, "local_addr": "10.0.0.5", "local_port": 6432, "connect_time": "2026-12-07 11:50:00 UTC",
           "request_time": "2026-12-07 11:59:00 UTC", "wait": wait, "wait_us": 250000, "close_needed": 0,
           "ptr": ptr, "link": link, "remote_pid": 0, "tls": "", "application_name": app}
    if cid is not None:
        row["id"] = cid
    return row


def pool(waiting: int = 0, maxwait: int = 0) -> dict:
    return {"database": "appdb", "user": "app_user", "cl_active": 3, "cl_waiting": waiting, "sv_active": 2,
            "sv_idle": 1, "sv_used": 0, "maxwait": maxwait, "maxwait_us": 0, "pool_mode": "transaction"}


def read(version: tuple[int, ...] = (1, 24, 1), waiting: int = 0, maxwait: int = 0, app: str = "billing") -> PoolerRead:
    return PoolerRead(
        name="pgb1", host="primary", version=version,
        pools=pool_rows([pool(waiting, maxwait), {"database": "pgbouncer", "user": "pgbouncer"}],
                        [{"name": "appdb", "pool_size": 2}]),
        servers=(server_row(server(101, link="0xc1", port=50001, ptr="0xs1")),
                 server_row(server(102, port=50002, ptr="0xs2"))),
        client_rows=(client("0xc1", "0xs1", 7 if version >= (1, 24) else None, app=app),),
        read_at=NOW,
    )


def session(pid: int, state: str, port: int | None, app: str = "billing") -> Session:
    return Session(pid=pid, backend_start=NOW, user="app_user", database="appdb", application=app,
                   client_addr="10.0.0.5", state=state, wait_event_type=None, wait_event=None, query="SELECT 1",
                   blocked_by=(), blocking_count=0, categories=(Category.IDLE,), query_secs=30.0, xact_secs=20.0,
                   state_secs=30.0, client_port=port)


def test_parse_show_rows_of_both_versions():
    assert parse_version("PgBouncer 1.24.1") == (1, 24, 1) and parse_version("PgBouncer 1.18.0") == (1, 18, 0)
    assert parse_version("nonsense") == ()
    c = client_row(client("0xc1", "0xs1", 7, wait=2))
    assert (c.id, c.addr, c.port, c.application, c.link) == (7, "192.0.2.7", 41000, "billing", "0xs1")
    assert c.wait_secs == pytest.approx(2.25) and c.connect_time == datetime(2026, 12, 7, 11, 50, tzinfo=UTC)
    assert client_row(client("0xc1", "", None)).id is None  # 1.18 has no id column
    s = server_row(server(101, link="0xc1", port=50001))
    assert (s.pid, s.local_port, s.link) == (101, 50001, "0xc1")
    (p,) = pool_rows([pool(4, 12), {"database": "pgbouncer", "user": "pgbouncer"}], [{"name": "appdb", "pool_size": 20}])
    assert (p.name, p.cl_waiting, p.maxwait_secs, p.pool_size, p.pool_mode) == ("app_user/appdb", 4, 12.0, 20, "transaction")


def test_annotate_names_the_client_and_drops_idle_pool_members():
    r = read()
    linked, member, direct = session(101, "idle in transaction", 50001), session(102, "idle", 50002), session(5, "idle", 6000)
    out = {s.pid: s for s in pgbouncer.annotate([linked, member, direct], (r,))}
    assert set(out) == {101, 5}  # the pool member is counted per pool, not listed
    via = out[101].via
    assert via is not None and via.client is not None
    assert (via.pooler, via.pool, via.pool_mode, via.client.addr, via.client.port) == (
        "pgb1", "app_user/appdb", "transaction", "192.0.2.7", 41000)
    assert out[5].via is None
    assert r.idle_members() == (("app_user/appdb", 1),)
    # a reused pid on another port is not the pooler's connection
    assert pgbouncer.via_for(session(101, "idle", 59999), (r,)) is None
    # over a unix socket (PostgreSQL shows port -1) the pid alone decides
    assert pgbouncer.via_for(session(101, "idle", -1), (r,)) is not None
    # a pooler that could not be read annotates nothing
    assert pgbouncer.annotate([member], (PoolerRead(name="x", host="primary", error="down"),))[0].via is None


def test_kill_client_refuses_anything_but_a_positive_int_without_connecting():
    unreachable = Pooler(dsn="host=192.0.2.1 port=1 dbname=pgbouncer connect_timeout=1")
    for bad in (True, 0, -3, "7; SHOW FDS", 7.5):
        res = pgbouncer.kill_client(unreachable, bad, addr=None, port=None)  # type: ignore[arg-type]
        assert res.status == "refused", bad


def test_via_line_escapes_hostile_names_and_says_why_no_disconnect():
    old = read(version=(1, 18, 0), app=HOSTILE)
    s = pgbouncer.annotate([session(101, "idle in transaction", 50001)], (old,))[0]
    line = via_line(s)
    assert line is not None and "<!channel>" not in line and "<https://" not in line and esc(HOSTILE, in_code=True) in line
    assert s.via is not None and "has no `KILL_CLIENT`" in (s.via.kill_client_refusal or "")
    notes = pooler_notes_text([old.note(), PoolerRead(name="pgb2", host="primary", error="<!here> down").note()])
    assert notes is not None and "1 idle in pool `app_user/appdb`" in notes and "<!here>" not in notes


def snapshot(r: PoolerRead, holders: tuple = ()) -> HostSnapshot:
    return HostSnapshot(env="prod", host="primary", taken_at=0.0, in_recovery=False, max_connections=100,
                        superuser_reserved=3, client_connections=10, sessions=(), extra={READS: (r,), HOLDERS: holders})


def holder_row(pid: int, app: str, xact: float) -> dict:
    return {"pid": pid, "backend_start": NOW, "backend_type": "client backend", "usename": "app_user",
            "datname": "appdb", "application_name": app, "client_addr": "10.0.0.5", "state": "idle in transaction",
            "query": "UPDATE t", "xact_secs": xact, "state_secs": xact, "query_secs": xact}


def test_pool_waiting_rule_names_the_oldest_holder():
    watch = parse_config({"environments": {"prod": {"dsn": "host=x", "watch": {"channel": "C1", "pool_waiting": True}}}},
                         environ={}).environments["prod"].watch
    assert watch is not None and watch.pool_waiting == 5.0
    quiet = pool_waiting(snapshot(read(waiting=3, maxwait=4)), watch)
    assert quiet == []  # 4 s < 5 s
    holder = session_from_row(holder_row(101, HOSTILE, 840.0), False, True)
    (cond,) = pool_waiting(snapshot(read(waiting=37, maxwait=12), (holder,)), watch)
    assert cond.kind == POOL_WAITING and cond.key == "pgb1:app_user/appdb"
    assert [s.pid for s in cond.sessions] == [101]
    msg = render_alert(cond.kind, "prod", "primary", cond.facts, incident_id="i1", opened_at=0.0, now=60.0)
    text = msg["text"] + str(msg["blocks"])
    assert "37 clients waiting, longest 12s" in text and "oldest transaction 14m" in text and "pid 101" in text
    assert "<!channel>" not in text


def test_pool_members_are_not_in_the_connections_sweep():
    member = session_from_row({**holder_row(102, "billing", 1.0), "state": "idle"}, False, True)
    direct = session_from_row({**holder_row(5, "billing", 1.0), "state": "idle"}, False, True)
    cond = Condition("connections", "", {"bulk_count": 2}, (), (member, direct), "billing")
    (out,) = without_pool_members([cond], snapshot(read()))
    assert [s.pid for s in out.bulk] == [5] and out.facts["bulk_count"] == 1


def test_pool_command_parsing():
    config = parse_config({"environments": {"prod": {"dsn": "host=x", "standbys": {"replica1": "host=y"}}}}, environ={})
    assert parse("prod pool", config) == ShowPools("prod")
    assert parse("prod replica1 pool", config) == ShowPools("prod", "replica1")
    with pytest.raises(CommandError) as info:
        parse("prod pool extra", config)
    assert "takes no more words" in info.value.answer()
