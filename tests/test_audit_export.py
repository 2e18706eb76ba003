"""`pgsessions audit` prints the audit trail as JSON lines or CSV; `/pgsessions audit <env>` filters by
person, time and action; every audit event is one structured log line (issue 16)."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import subprocess
import sys
import uuid

import pytest
import yaml

from bot.logs import make_handler
from tests.harness.bot import BotUnderTest, env_config
from tests.harness.flows import click, request_kill, wait_state


@pytest.fixture
def bot(pg, fake_slack):
    fake_slack.usergroups = {"S0DBAS": ["U7", "U8"]}
    config = {"environments": {"test": env_config(pg), "other": env_config(pg)}}
    b = BotUnderTest(config, fake_slack).start()
    yield b
    b.close()


def victim(pg):
    app = "audit-victim-" + uuid.uuid4().hex[:8]
    conn = pg.primary.connect(user="app_user", dbname="appdb", application_name=app)
    conn.execute("SELECT 1")
    return conn, app


def run_audit(bot, tmp_path, *args) -> subprocess.CompletedProcess:
    path = tmp_path / "pgsessions.yml"
    path.write_text(yaml.safe_dump(bot.config_dict))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "PGSESSIONS_"))}
    return subprocess.run([sys.executable, "-m", "bot.cli", "audit", "--config", str(path), *args],
                          capture_output=True, text=True, timeout=60, env=env)


def test_audit_trail_leaves_slack(bot, pg, tmp_path):
    stream = io.StringIO()
    handler = make_handler("json", stream)
    audit_logger = logging.getLogger("pgsessions.audit")
    audit_logger.addHandler(handler)
    audit_logger.setLevel(logging.INFO)
    try:
        conn, app = victim(pg)
        pid = conn.info.backend_pid
        try:
            msg = request_kill(bot, "test", app, pid, "Terminate", user="U1", reason="runaway, \"quoted\"")
            click(bot, msg, "Approve", "U2")
            wait_state(bot, msg, "*Done*", timeout=20)
        finally:
            conn.close()
        conn2, app2 = victim(pg)
        try:
            msg2 = request_kill(bot, "other", app2, conn2.info.backend_pid, "Terminate", user="U3", reason="other env")
            click(bot, msg2, "Deny", "U2")
            wait_state(bot, msg2, "*Denied*")
        finally:
            conn2.close()
    finally:
        audit_logger.removeHandler(handler)

    # JSON lines: every request, decision and outcome, with the Slack ids and the target's identity
    res = run_audit(bot, tmp_path, "--format", "jsonl")
    assert res.returncode == 0, res.stderr
    records = [json.loads(line) for line in res.stdout.splitlines()]
    mine = [r for r in records if r["env"] == "test" and r["pid"] == pid]
    by_event = {r["event"]: r for r in mine}
    assert {"requested", "approved", "executed"} <= set(by_event), by_event
    assert by_event["requested"]["actor"] == "U1" and by_event["approved"]["actor"] == "U2"
    assert all(r["requester"] == "U1" and r["action"] == "terminate" for r in mine)
    assert by_event["executed"]["backend_start"] and by_event["executed"]["application"] == app
    assert by_event["requested"]["reason"] == 'runaway, "quoted"'
    assert "terminated" in (by_event["executed"]["result"] or "")
    assert any(r["env"] == "other" and r["event"] == "denied" and r["actor"] == "U2" for r in records)
    ats = [r["at"] for r in records]
    assert ats == sorted(ats) and all(a.endswith("Z") for a in ats)

    # --env and CSV
    res = run_audit(bot, tmp_path, "--format", "csv", "--env", "other", "--since", "1h")
    assert res.returncode == 0, res.stderr
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert rows and {r["env"] for r in rows} == {"other"}
    assert {"requested", "denied"} <= {r["event"] for r in rows}
    assert rows[0].keys() >= {"at", "actor", "requester", "pid", "backend_start", "reason", "result"}

    # bad input: a clear message and exit 2
    res = run_audit(bot, tmp_path, "--env", "nope")
    assert res.returncode == 2 and "unknown environment 'nope'" in res.stderr and "Traceback" not in res.stderr
    res = run_audit(bot, tmp_path, "--since", "soon")
    assert res.returncode == 2 and "not a duration" in res.stderr

    # one structured log line per audit event
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    audits = [entry for entry in lines if entry.get("event") == "audit"]
    assert len(audits) == len(records), (len(audits), len(records))
    executed = next(a for a in audits if a["audit"].get("event") == "executed")
    assert executed["audit"]["pid"] == pid and executed["env"] == "test"
    assert "query" not in executed["audit"], "query texts stay out of the logs"

    # /pgsessions audit with filters
    def audit_reply(text):
        reply = bot.slack.slash(text, user_id="U1")
        assert reply.status == 200
        post = bot.fake.wait_for_response(reply.response_name)
        return json.dumps(post.blocks) + (post.text or "")

    by_u3 = audit_reply("audit other --user U3")
    assert "other" in by_u3 and "requested" in by_u3
    assert ": done" not in audit_reply("audit test --action cancel")  # executed reads "done" in Slack
    assert "Terminate: done" in audit_reply("audit test --action terminate --since 1d")
    assert "no entries" in audit_reply("audit test --user U0NOBODY")
