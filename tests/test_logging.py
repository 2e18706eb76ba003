"""Logs: one line per event, JSON that parses, request ids from the HTTP layer into listener threads,
and no secret (DSN password, Slack token, signing secret) even when connections fail."""

from __future__ import annotations

import io
import json
import logging
import time

import pytest
import yaml

from bot.logs import REQUEST_ID, JsonFormatter, TextFormatter, make_handler, request_context
from tests.harness.bot import SIGNING_SECRET, BotUnderTest, env_config
from tests.harness.fake_slack import FakeSlack
from tests.harness.pgcluster import PW_ROLE, PW_ROLE_PASSWORD
from tests.test_replicas import BOT_TOKEN, ServeProcess, state_database

WRONG_PASSWORD = "wr0ng-Pa55-Zq7x"


def parse_lines(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"not a JSON log line: {line!r}") from None
    return out


def assert_no_secret(text: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in text, f"secret {secret[:3]}… leaked into the logs"


@pytest.fixture
def captured():
    """The root logger writing JSON into a buffer (as `--log-format json` sets it up)."""
    buf = io.StringIO()
    handler = make_handler("json", buf)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield buf
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def test_request_id_follows_a_command_into_the_listener_thread(pg, fake_slack, captured):
    """The warning logged by the listing handler (in Bolt's thread pool) carries the id of the HTTP request."""
    config = {
        "environments": {
            "pwprod": env_config(pg) | {
                "dsn": pg.primary.dsn(user=PW_ROLE, password=WRONG_PASSWORD),
                "standbys": {"replica1": f"postgresql://{PW_ROLE}:{PW_ROLE_PASSWORD}@127.0.0.1:{pg.standby.port}/nodb"},
            },
        }
    }
    with BotUnderTest(config, fake_slack) as bot:
        replies = [bot.command("pwprod", channel_id="C1"), bot.command("pwprod replica1", channel_id="C1")]
        ids = [r.headers["X-Request-Id"] for r in replies]
        assert all(r.status == 200 for r in replies)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            records = parse_lines(captured.getvalue())
            failures = [r for r in records if "failed" in r["msg"] and r["logger"].startswith("bot.slack")]
            if len(failures) >= 2:
                break
            time.sleep(0.05)
        else:
            raise AssertionError(captured.getvalue())
    text = captured.getvalue()
    records = parse_lines(text)
    assert_no_secret(text, WRONG_PASSWORD, PW_ROLE_PASSWORD, SIGNING_SECRET, "xoxb-test")

    assert len(set(ids)) == 2
    for rid in ids:
        ts, rand = rid.split("-")
        assert ts.isdigit() and abs(int(ts) - time.time()) < 60 and len(rand) == 8
    # the access line of each request, written by the WSGI layer
    access = [r for r in records if r.get("event") == "slack_request"]
    assert {r["request_id"] for r in access} >= set(ids)
    assert all(r["kind"] == "command" and r["status"] == "200" for r in access)
    # the handler's warnings, written later from the listener threads, carry the same ids
    by_id = {r["request_id"]: r for r in failures}
    assert set(by_id) == set(ids), failures
    assert "password authentication failed" in by_id[ids[0]]["msg"]
    assert "does not exist" in by_id[ids[1]]["msg"]
    # nothing outside a request carries an id
    assert REQUEST_ID.get() is None


@pytest.mark.unit
def test_json_formatter_is_one_line_and_scrubbed(captured):
    log = logging.getLogger("bot.test")
    dsn = f"host=db1 user={PW_ROLE} password={WRONG_PASSWORD} dbname=x"
    with request_context("1700000000-abcdef12"):
        try:
            raise RuntimeError(f"could not connect with {dsn}\nsecond line")
        except RuntimeError:
            log.exception("connecting failed", extra={"env": "prod", "host": "primary", "event": "connect"})
    log.info("token xoxb-1234-5678-abcdefSECRET in a message")
    lines = [line for line in captured.getvalue().splitlines() if line]
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["request_id"] == "1700000000-abcdef12"
    assert first["level"] == "error" and first["env"] == "prod" and first["event"] == "connect"
    assert "Traceback" in first["msg"] and "second line" in first["msg"]
    assert "request_id" not in second
    assert_no_secret(captured.getvalue(), WRONG_PASSWORD, "abcdefSECRET")


@pytest.mark.unit
def test_text_format_is_one_line_per_event_with_the_request_id():
    buf = io.StringIO()
    handler = make_handler("text", buf)
    assert isinstance(handler.formatter, TextFormatter)
    log = logging.getLogger("bot.test.text")
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.INFO)
    try:
        with request_context("1700000000-0badc0de"):
            try:
                raise ValueError(f"boom password={WRONG_PASSWORD}")
            except ValueError:
                log.exception("it failed\non two lines")
        log.info("outside")
    finally:
        log.removeHandler(handler)
        log.propagate = True
    lines = buf.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert "[req 1700000000-0badc0de]" in lines[0] and "Traceback" in lines[0]
    assert "[req" not in lines[1]
    assert_no_secret(buf.getvalue(), WRONG_PASSWORD)
    assert isinstance(make_handler("json").formatter, JsonFormatter)


def test_serve_json_logs_have_no_secret_when_password_dsns_fail(pg, tmp_path):
    """`pgsessions serve --log-format json`: every line is JSON, requests carry ids, no secret anywhere."""
    state_url, _ = state_database(pg, "pgs_logging")
    config = {
        "state": state_url,
        "environments": {
            # wrong password, from an environment variable
            "badpw": {"dsn": f"host=127.0.0.1 port={pg.primary.port} dbname=postgres user={PW_ROLE} "
                             "password=${PGS_TEST_WRONG_PW}", "timeouts": {"connect": "2s"}},
            # right password in a URI, database missing
            "nodb": {"dsn": f"postgresql://{PW_ROLE}:{PW_ROLE_PASSWORD}@127.0.0.1:{pg.primary.port}/nodb",
                     "timeouts": {"connect": "2s"}},
            # right password, nothing listening
            "down": {"dsn": f"postgresql://{PW_ROLE}:{PW_ROLE_PASSWORD}@127.0.0.1:9/postgres",
                     "timeouts": {"connect": "1s"}},
            # works
            "good": {"dsn": pg.primary.dsn(user=PW_ROLE, password=PW_ROLE_PASSWORD)},
        },
    }
    path = tmp_path / "pgsessions.yml"
    path.write_text(yaml.safe_dump(config))
    with FakeSlack(token=BOT_TOKEN) as fake:
        proc = ServeProcess(path, fake, env={"PGS_TEST_WRONG_PW": WRONG_PASSWORD}, log_level="DEBUG").start()
        try:
            sender = proc.sender()
            ids = []
            for env in ("badpw", "nodb", "down", "good"):
                reply = sender.slash(env, channel_id="C1")
                assert reply.status == 200
                ids.append(reply.headers["X-Request-Id"])
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                warned = [line for line in proc.lines if "failed" in line and "listing" in line]
                if len(warned) >= 3 and fake.calls_for("chat.postMessage", ok=True):
                    break
                time.sleep(0.1)
            else:
                raise AssertionError(proc.output())
        finally:
            assert proc.stop() == 0
    out = proc.output()
    assert_no_secret(out, WRONG_PASSWORD, PW_ROLE_PASSWORD, BOT_TOKEN, SIGNING_SECRET, "TOKENSECRET")
    records = parse_lines("\n".join(proc.lines))
    assert not proc.stdout_lines or all(json.loads(line) for line in proc.stdout_lines if line.strip())
    access = {r["request_id"]: r for r in records if r.get("event") == "slack_request"}
    assert set(ids) <= set(access)
    failed = [r for r in records if "listing" in r["msg"] and "failed" in r["msg"]]
    assert {r.get("request_id") for r in failed} == set(ids[:3])
    reasons = " ".join(r["msg"] for r in failed)
    assert "password authentication failed" in reasons and "does not exist" in reasons and "refused" in reasons
    for r in records:
        assert {"ts", "level", "logger", "msg"} <= set(r)


def test_socket_mode_requests_get_ids_metrics_and_an_access_line(pg, fake_slack, captured):
    """Socket Mode hands requests to app.dispatch() without the WSGI layer: the Bolt middleware does it."""
    from urllib.parse import urlencode

    from slack_bolt.request import BoltRequest

    from bot.metrics import ACK_SECONDS, SLACK_REQUESTS

    config = {"environments": {"sock": {"dsn": pg.primary.dsn(user=PW_ROLE, password=WRONG_PASSWORD)}}}
    with BotUnderTest(config, fake_slack) as bot:
        before = SLACK_REQUESTS.labels("command", "socket")._value.get()
        acks = ACK_SECONDS.labels("command")._sum.get()
        fields = {"command": "/pgsessions", "text": "sock", "user_id": "U1", "channel_id": "C1",
                  "team_id": "T1", "response_url": fake_slack.response_url("sock"), "trigger_id": "1.2.3"}
        resp = bot.app.dispatch(BoltRequest(body=urlencode(fields), mode="socket_mode"))
        assert resp.status == 200
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            records = parse_lines(captured.getvalue())
            failed = [r for r in records if "listing" in r["msg"] and "failed" in r["msg"]]
            if failed:
                break
            time.sleep(0.05)
        else:
            raise AssertionError(captured.getvalue())
        assert SLACK_REQUESTS.labels("command", "socket")._value.get() == before + 1
        assert ACK_SECONDS.labels("command")._sum.get() > acks
    access = [r for r in records if r.get("event") == "slack_request" and r.get("status") == "socket"]
    assert len(access) == 1 and access[0]["request_id"]
    assert failed[0]["request_id"] == access[0]["request_id"]
    assert_no_secret(captured.getvalue(), WRONG_PASSWORD)


@pytest.mark.unit
def test_an_audit_line_quotes_its_values_so_no_field_can_be_forged():
    """Issue 23 §9: an application_name like ``x result=executed actor=U0ADMIN`` stays one quoted value in the
    text log, and the JSON log's audit fields go through the secret scrubber."""
    import re

    from bot.audit_export import log_audit
    from bot.secrets import SECRETS

    forged = 'x result=executed actor=U0ADMIN "quoted" \\ end'
    secret = "Zq7-audit-" + WRONG_PASSWORD
    SECRETS.add(secret)
    values = {"at": 1.7e9, "env": "prod env", "host": "primary", "event": "terminate:refused", "actor": "U1",
              "pid": 42, "application": forged, "reason": f"uses {secret}", "result": "moved on"}
    audit_logger = logging.getLogger("pgsessions.audit")
    for fmt in ("text", "json"):
        buf = io.StringIO()
        handler = make_handler(fmt, buf)
        audit_logger.addHandler(handler)
        audit_logger.setLevel(logging.INFO)
        try:
            log_audit(values)
        finally:
            audit_logger.removeHandler(handler)
        out = buf.getvalue()
        assert_no_secret(out, secret)
        if fmt == "text":
            line = out.strip()
            assert len(out.splitlines()) == 1
            # every key=value pair: a quoted string or a number; the forged words sit inside one value
            pairs = re.findall(r'(\w+)=("(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?)', line.split(" audit ", 1)[1])
            keys = [k for k, _ in pairs]
            assert keys.count("result") == 1 and keys.count("actor") == 1, line
            assert dict(pairs)["actor"] == '"U1"' and dict(pairs)["result"] == '"moved on"'
            assert json.loads(dict(pairs)["application"]) == forged
            assert 'env="prod env"' in line
        else:
            entry = json.loads(out)
            assert entry["audit"]["application"] == forged and entry["audit"]["actor"] == "U1"
            assert "***" in entry["audit"]["reason"]


@pytest.mark.unit
def test_json_extra_fields_are_scrubbed_however_deep(captured):
    from bot.secrets import SECRETS

    secret = "Zq7-deep-" + WRONG_PASSWORD
    SECRETS.add(secret)
    logging.getLogger("bot.test").info("audit", extra={"audit": {"reason": secret, "list": [secret]}})
    assert_no_secret(captured.getvalue(), secret)
