"""Fast tests for issue 16's pure parts: channel defaults, audit filters, the event de-duplication map,
mention texts, audit export formats."""

from __future__ import annotations

import csv
import io
import json

import pytest

from bot.channel_defaults import apply_channel_default
from bot.commands import Audit, CommandError, ListSessions, parse
from bot.config import ConfigError, parse_config
from bot.slack.events import EventDedupe, mention_text

pytestmark = pytest.mark.unit

DSN = "host=db1 dbname=postgres user=pgsessions_bot"


def config(**top):
    return parse_config({"environments": {"prod": {"dsn": DSN, "standbys": {"replica1": DSN}},
                                          "stage": {"dsn": DSN}}, **top}, environ={})


def test_channel_default_puts_the_environment_in_front_only_when_none_is_named():
    c = config(channels_default_env={"C0123": "prod"})
    assert apply_channel_default("", c, "C0123") == "prod"
    assert apply_channel_default("   ", c, "C0123") == "prod"
    assert apply_channel_default("idle --min 10m", c, "C0123") == "prod idle --min 10m"
    assert apply_channel_default("--app=web", c, "C0123") == "prod --app=web"
    assert apply_channel_default("lag", c, "C0123") == "prod lag"
    assert apply_channel_default("replica1 active", c, "C0123") == "prod replica1 active"
    assert apply_channel_default("clear-db app", c, "C0123") == "prod clear-db app"
    for same in ("help", "pending", "audit prod", "stage idle", "prod", "nonsense"):
        assert apply_channel_default(same, c, "C0123") == same
    assert apply_channel_default("", c, "C9") == ""
    assert apply_channel_default("", c, None) == ""
    assert parse(apply_channel_default("", c, "C0123"), c) == ListSessions("prod")


def test_channel_default_must_name_a_configured_environment():
    with pytest.raises(ConfigError) as err:
        config(channels_default_env={"C0123": "prdo"})
    msg = str(err.value)
    assert "channels_default_env.C0123" in msg and "'prdo'" in msg and "prod, stage" in msg


def test_audit_filters():
    c = config()
    assert parse("audit prod", c) == Audit("prod")
    assert parse("audit", c) == Audit(None)
    cmd = parse("audit prod --user U0123ABCD --since 1d --action terminate", c)
    assert cmd == Audit("prod", actor="U0123ABCD", since=86400.0, action="terminate")
    assert parse("audit --user <@U0123ABCD|alice> --since=2h", c) == Audit(None, actor="U0123ABCD", since=7200.0)
    assert parse("audit prod --action clear-db", c).action == "clear_db"
    for bad, needle in [
        ("audit prod --user alice", "give the person's Slack member ID"),
        ("audit prod --since soon", "`--since soon`"),
        ("audit prod --action kill", "is not an action"),
        ("audit prod --since", "needs a value"),
        ("audit prod --user U1AB --user U2AB", "given twice"),
        ("audit prod extra", "`audit` does not know `extra`"),
        ("audit prod --since 1d extra", "`audit` does not know `extra`"),
        ("audit nope", "Unknown environment `nope`"),
    ]:
        with pytest.raises(CommandError) as err:
            parse(bad, c)
        assert needle in err.value.message, (bad, err.value.message)


def test_event_dedupe_remembers_ids_for_its_ttl_and_stays_bounded():
    d = EventDedupe(ttl=10, max_size=3)
    assert d.first_time("Ev1", now=0) and not d.first_time("Ev1", now=5)
    assert d.first_time("Ev1", now=11)  # forgotten after the TTL
    for i in range(10):
        d.first_time(f"Ev{i + 2}", now=12)
    assert len(d) <= 3


def test_mention_text():
    assert mention_text("<@UBOT> prod idle", "UBOT") == "prod idle"
    assert mention_text("<@UBOT|pgsessions> audit prod --user <@U0123ABC>", "UBOT") == "audit prod --user <@U0123ABC>"
    assert mention_text("<@UBOT> prod --app a&amp;b", "UBOT") == "prod --app a&b"
    assert mention_text("<@UOTHER> prod", None) == "prod"


def test_audit_export_formats():
    from bot.audit_export import write_csv, write_jsonl

    rows = [{"at": 1700000000.5, "env": "prod", "host": "primary", "request_id": "r1", "event": "terminate:approved",
             "actor": "U2", "requester": "U1", "pid": 42, "backend_start": "2024-01-01 00:00:00.123456+00",
             "db_user": "app", "application": "=cmd|' /C calc'!A0", "query": "select 1", "reason": "why",
             "result": None}]
    out = io.StringIO()
    assert write_jsonl(rows, out) == 1
    rec = json.loads(out.getvalue())
    assert rec["action"] == "terminate" and rec["event"] == "approved" and rec["at"] == "2023-11-14T22:13:20.500Z"
    assert rec["pid"] == 42 and rec["actor"] == "U2" and rec["requester"] == "U1"
    out = io.StringIO()
    write_csv(rows, out)
    parsed = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert parsed[0]["pid"] == "42" and parsed[0]["application"].startswith("'=")  # no formula in a spreadsheet


def test_nudge_texts_escape_database_text_and_link_the_request():
    from bot.render.nudges import outcome_dm, reminder
    from tests.dict_compat import as_request

    req = {"id": "r1", "env": "prod", "host": "primary", "action": "terminate", "requester": "U1",
           "decided_by": "U2,U3", "state": "failed", "created_at": 0.0, "expires_at": 900.0,
           "target": {"pid": 42}, "outcome": {"detail": "error <!channel> & <http://x|y>"}}
    dm = outcome_dm(as_request(req), "https://t.slack.com/archives/C1/p1")
    text = json.dumps(dm)
    assert "<!channel>" not in text and "&lt;!channel&gt; &amp;" in text
    assert "<@U2>, <@U3>" in dm["blocks"][0]["text"]["text"] and "but not done" in dm["text"]
    assert "<https://t.slack.com/archives/C1/p1|The request in Slack>" in text
    expired = outcome_dm(as_request({**req, "state": "expired", "outcome": None}), None)
    assert "within 15m" in expired["text"] and len(expired["blocks"]) == 1
    r = reminder(as_request({**req, "state": "pending"}), ["U2", "S0DBAS"])
    assert "<@U2>, <!subteam^S0DBAS>" in r["text"] and "<@U1>'s request" in r["text"]


def test_home_view_stays_within_100_blocks_and_escapes_server_text():
    from bot.render.home import EnvStatus, HostStatus, home_view
    from tests.dict_compat import as_request

    now = 1_700_000_000.0
    waiting = [{"id": f"r{i}", "env": "prod", "host": "primary", "action": "terminate", "requester": "U1",
                "reason": "<!here>", "created_at": now - 60, "expires_at": now + 600, "channel": "C1",
                "message_ts": f"1700000000.{i:06d}", "target": {"pid": i}} for i in range(60)]
    mine = [{**w, "state": "done"} for w in waiting[:30]]
    envs = [EnvStatus(f"env{i}", (HostStatus("primary", connections=5, max_connections=100,
                                             attention={"idle in transaction": 2}),
                                  HostStatus("r1", error="timeout <@U1>", is_standby=True)),
                      (("r1", "lag", "https://slack.com/archives/C9/p1"),)) for i in range(40)]
    view = home_view("U2", [as_request(w) for w in waiting], [as_request(m) for m in mine], envs, now)
    assert view["type"] == "home" and len(view["blocks"]) <= 100
    text = json.dumps(view)
    assert "<!here>" not in text and "<@U1>" not in text.replace("by <@U1>", "")
    assert "40 more waiting" in text and "15 more environments" in text
    ids = [el["action_id"] for b in view["blocks"] if b["type"] == "actions" for el in b["elements"]]
    assert len(ids) == len(set(ids)) and "pgs_req:approve:r0" in ids
    empty = home_view("U9", [], [], [], now)
    assert "no environment you may see" in json.dumps(empty)
