"""Tests of the test harness itself: the PostgreSQL pair, the fake Slack and the request sender."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
import uuid
from urllib.parse import urlencode
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import psycopg
import pytest
from psycopg import sql as pgsql
from slack_bolt import App
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler
from slack_sdk.signature import SignatureVerifier
from slack_sdk.webhook import WebhookClient

from tests.harness.pgcluster import APP_DB, APP_ROLE, BOT_ROLE, PW_ROLE, PW_ROLE_PASSWORD, ClusterPair
from tests.harness.slack_requests import SlackSender, sign

# ---- PostgreSQL pair ------------------------------------------------------------------------------


def test_pair_is_streaming_and_the_standby_is_hot(pg: ClusterPair) -> None:
    assert pg.standby is not None
    assert pg.primary.sql("SELECT pg_is_in_recovery()") == [(False,)]
    assert pg.standby.sql("SELECT pg_is_in_recovery()") == [(True,)]
    assert pg.standby.sql("SELECT status FROM pg_stat_wal_receiver") == [("streaming",)]
    assert ("streaming",) in (pg.primary.sql("SELECT state FROM pg_stat_replication") or [])
    assert pg.primary.port != 5432 and pg.standby.port != 5432

    table = pgsql.Identifier(f"harness_{uuid.uuid4().hex[:8]}")
    pg.primary.sql(pgsql.SQL("CREATE TABLE {} (x int)").format(table))
    pg.primary.sql(pgsql.SQL("INSERT INTO {} VALUES (42)").format(table))
    pg.wait_replayed()
    assert pg.standby.sql(pgsql.SQL("SELECT x FROM {}").format(table)) == [(42,)]
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        pg.standby.sql(pgsql.SQL("INSERT INTO {} VALUES (1)").format(table))
    pg.primary.sql(pgsql.SQL("DROP TABLE {}").format(table))


def test_roles_and_database(pg: ClusterPair) -> None:
    for node in (pg.primary, pg.standby):
        assert node is not None
        rows = node.sql(
            "SELECT r.rolname, r.rolsuper, r.rolcanlogin, "
            "pg_has_role(r.rolname, 'pg_monitor', 'MEMBER'), pg_has_role(r.rolname, 'pg_signal_backend', 'MEMBER') "
            "FROM pg_roles r WHERE r.rolname = ANY(%s) ORDER BY 1",
            ([BOT_ROLE, PW_ROLE, APP_ROLE],),
        )
        assert rows == [
            (APP_ROLE, False, True, False, False),
            (BOT_ROLE, False, True, True, True),
            (PW_ROLE, False, True, True, True),
        ]
        assert node.sql("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (APP_DB,)) == [
            (APP_ROLE,)
        ]

    # pg_monitor at work: the bot role sees another user's query text
    with pg.primary.connect(user=APP_ROLE, dbname=APP_DB, application_name="harness-app") as app:
        app.execute("SELECT 'harness-marker'")
        rows = pg.primary.sql(
            "SELECT query FROM pg_stat_activity WHERE application_name = 'harness-app'", user=BOT_ROLE
        )
    assert rows and "harness-marker" in rows[0][0]


def test_password_role_needs_its_password(pg: ClusterPair, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))
    with pytest.raises(psycopg.OperationalError, match="password"):
        pg.primary.sql("SELECT 1", user=PW_ROLE)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        pg.primary.sql("SELECT 1", user=PW_ROLE, password="wrong")
    assert pg.primary.sql("SELECT current_user", user=PW_ROLE, password=PW_ROLE_PASSWORD) == [(PW_ROLE,)]
    assert f"user={PW_ROLE}" in pg.primary.dsn(user=PW_ROLE)


def test_node_stop_start_and_standby_delay(pg: ClusterPair) -> None:
    if pg.external:
        pytest.skip("external servers are not ours to stop")
    assert pg.standby is not None
    pg.standby.stop()
    with pytest.raises(psycopg.OperationalError):
        pg.standby.sql("SELECT 1")
    pg.standby.start()
    pg.wait_streaming()
    assert pg.standby.sql("SELECT pg_is_in_recovery()") == [(True,)]

    pg.set_standby_delay("-1")
    assert pg.standby.sql("SHOW max_standby_streaming_delay") == [("-1",)]
    pg.set_standby_delay("30s")
    assert pg.standby.sql("SHOW max_standby_streaming_delay") == [("30s",)]
    pg.primary.sql("CREATE TEMP TABLE t_after_restart (x int)")
    pg.wait_replayed()


# ---- fake Slack -----------------------------------------------------------------------------------


def _section(text: str, block_id: str | None = None) -> dict:
    block = {"type": "section", "text": {"type": "mrkdwn", "text": text}}
    if block_id:
        block["block_id"] = block_id
    return block


# every post of the bot turns unfurling off (the fake warns otherwise): these posts do too
QUIET = {"unfurl_links": False, "unfurl_media": False}


def test_fake_records_post_and_update_from_webclient(fake_slack) -> None:
    client = WebClient(base_url=fake_slack.api_url, token="xoxb-test")
    assert client.auth_test()["user_id"] == "UBOT"
    blocks = [
        _section("*3 sessions*", "summary"),
        {
            "type": "actions",
            "block_id": "act",
            "elements": [
                {
                    "type": "button",
                    "action_id": "cancel",
                    "value": "1",
                    "text": {"type": "plain_text", "text": "Cancel"},
                }
            ],
        },
    ]
    posted = client.chat_postMessage(channel="C1", text="3 sessions", blocks=blocks, **QUIET)
    call = fake_slack.wait_for("chat.postMessage")
    assert call.ok and call.content_type.startswith("application/json")
    assert call.headers["authorization"] == "Bearer xoxb-test"
    assert call.params["blocks"] == blocks
    stored = fake_slack.messages[("C1", posted["ts"])]
    assert stored.text == "3 sessions" and stored.blocks == blocks

    client.chat_update(channel="C1", ts=posted["ts"], text="done", blocks=[_section("done")])
    assert fake_slack.wait_for("chat.update").ok
    assert stored.text == "done" and stored.blocks == [_section("done")]
    assert [v["text"] for v in stored.versions] == ["3 sessions", "done"]
    fake_slack.assert_clean()

    second = client.chat_postMessage(channel="C1", text="again", **QUIET)
    assert float(second["ts"]) > float(posted["ts"])
    with pytest.raises(SlackApiError) as err:
        client.chat_update(channel="C1", ts="1.000000", text="x")
    assert err.value.response["error"] == "message_not_found"


def test_fake_checks_tokens_scopes_and_unknown_methods(fake_slack) -> None:
    for token, error in ((None, "not_authed"), ("xoxb-other", "invalid_auth")):
        with pytest.raises(SlackApiError) as err:
            WebClient(base_url=fake_slack.api_url, token=token).chat_postMessage(channel="C1", text="x")
        assert err.value.response["error"] == error
    assert not fake_slack.messages

    client = WebClient(base_url=fake_slack.api_url, token="xoxb-test")
    resp = client.auth_test()
    assert set(resp.headers["x-oauth-scopes"].split(",")) == set(fake_slack.scopes)
    fake_slack.usergroups = {"S0DBAS": ["U1", "U2"]}
    assert client.usergroups_users_list(usergroup="S0DBAS")["users"] == ["U1", "U2"]
    with pytest.raises(SlackApiError, match="no_such_subteam"):
        client.usergroups_users_list(usergroup="S0NOPE")
    fake_slack.users = {"U1": "Alice Admin"}
    assert client.users_info(user="U1")["user"]["real_name"] == "Alice Admin"
    assert client.users_info(user="U9")["user"]["real_name"] == "U9"
    # conversations.info needs channels:read, which the bot's manifest does not ask for
    with pytest.raises(SlackApiError, match="missing_scope"):
        client.conversations_info(channel="C1")
    with pytest.raises(SlackApiError, match="unknown_method"):
        client.api_call("chat.frobnicate")
    fake_slack.scopes = [s for s in fake_slack.scopes if s != "usergroups:read"]
    with pytest.raises(SlackApiError, match="missing_scope"):
        client.usergroups_users_list(usergroup="S0DBAS")


def test_fake_enforces_block_kit_limits(fake_slack) -> None:
    client = WebClient(base_url=fake_slack.api_url, token="xoxb-test")
    with pytest.raises(SlackApiError) as err:
        client.chat_postMessage(channel="C1", text="many", blocks=[_section(f"row {i}") for i in range(51)], **QUIET)
    assert err.value.response["error"] == "invalid_blocks"
    assert err.value.response["errors"]
    assert not fake_slack.messages
    assert fake_slack.violations and fake_slack.violations[0].where == "chat.postMessage"

    client.chat_postMessage(channel="C1", text="fifty", blocks=[_section(f"row {i}") for i in range(50)], **QUIET)
    assert len(fake_slack.messages) == 1

    button = {"type": "button", "action_id": "dup", "text": {"type": "plain_text", "text": "Go"}}
    bad = [
        _section("x" * 3001),
        {"type": "header", "text": {"type": "plain_text", "text": "h" * 151}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": "f" * 2001}] * 11},
        {"type": "actions", "elements": [button, dict(button, value="v" * 2001)]},
    ]
    with pytest.raises(SlackApiError) as err:
        client.chat_postMessage(channel="C1", text="bad", blocks=bad, **QUIET)
    errors = " ".join(err.value.response["errors"])
    for needle in (
        "/blocks/0/text/text",
        "/blocks/1/text/text",
        "/blocks/2/fields",
        "/blocks/2/fields/0/text",
        "duplicate action_id",
        "/blocks/3/elements/1/value",
    ):
        assert needle in errors, needle

    with pytest.warns(UserWarning, match="text"):  # slack_sdk warns too
        client.chat_postMessage(channel="C1", blocks=[_section("no fallback")], **QUIET)
    assert fake_slack.warnings and "missing_text" in fake_slack.warnings[0].errors[0]

    with pytest.raises(SlackApiError) as err:
        client.views_open(
            trigger_id="123.456.abc",
            view={"type": "modal", "title": {"type": "plain_text", "text": "t" * 25}, "blocks": []},
        )
    assert err.value.response["error"] == "invalid_arguments"


def test_rate_limited_post_is_retried_and_stored_once(fake_slack) -> None:
    client = WebClient(base_url=fake_slack.api_url, token="xoxb-test")
    client.retry_handlers.append(RateLimitErrorRetryHandler(max_retry_count=2))
    fake_slack.fail_next("chat.postMessage", status=429, retry_after=0)
    resp = client.chat_postMessage(channel="C1", text="once")
    calls = fake_slack.calls_for("chat.postMessage")
    assert [c.status for c in calls] == [429, 200]
    assert calls[0].response == {"ok": False, "error": "ratelimited"}
    assert list(fake_slack.messages) == [("C1", resp["ts"])]

    fake_slack.fail_next("chat.postMessage", error="channel_not_found")
    with pytest.raises(SlackApiError, match="channel_not_found"):
        client.chat_postMessage(channel="C1", text="lost")
    fake_slack.fail_next("chat.postMessage", status=500)
    with pytest.raises(SlackApiError):
        WebClient(base_url=fake_slack.api_url, token="xoxb-test").chat_postMessage(channel="C1", text="lost")
    assert len(fake_slack.messages) == 1


def test_response_url_and_views(fake_slack) -> None:
    client = WebClient(base_url=fake_slack.api_url, token="xoxb-test")
    ts = client.chat_postMessage(channel="C1", text="approve?")["ts"]
    url = fake_slack.response_url("r1", channel="C1", message_ts=ts)
    hook = WebhookClient(url)
    assert hook.send(text="approved", replace_original=True).body == "ok"
    post = fake_slack.wait_for_response("r1")
    assert post.replace_original and post.text == "approved"
    assert fake_slack.messages[("C1", ts)].text == "approved"
    assert hook.send(text="bad", blocks=[_section("x" * 3001)]).status_code == 400
    assert fake_slack.violations[-1].where == "response_url:r1"
    for _ in range(4):
        hook.send(text="more")
    assert hook.send(text="sixth").status_code == 404  # 5 uses per response_url

    view = {
        "type": "modal",
        "callback_id": "cb",
        "title": {"type": "plain_text", "text": "Terminate"},
        "blocks": [],
    }
    trigger = f"{int(time.time() * 1000)}.1.ab"
    opened = client.views_open(trigger_id=trigger, view=view)["view"]
    assert fake_slack.views[opened["id"]].callback_id == "cb"
    with pytest.raises(SlackApiError, match="exchanged_trigger_id"):
        client.views_open(trigger_id=trigger, view=view)
    with pytest.raises(SlackApiError, match="expired_trigger_id"):
        client.views_open(trigger_id=f"{int(time.time() * 1000) - 4000}.2.ab", view=view)
    client.views_update(view_id=opened["id"], hash=opened["hash"], view=dict(view, private_metadata="m"))
    assert fake_slack.views[opened["id"]].private_metadata == "m"


# ---- signed requests ------------------------------------------------------------------------------


def test_signature_matches_slack_sdk_verifier() -> None:
    body = "token=x&text=list%20primary&user_id=U1"
    ts = str(int(time.time()))
    verifier = SignatureVerifier("s3cret")
    assert verifier.is_valid(body, ts, sign("s3cret", ts, body))
    assert not verifier.is_valid(body, ts, sign("other", ts, body))
    assert sign("s3cret", ts, body.encode()) == sign("s3cret", int(ts), body)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args) -> None:
        pass


def test_sender_payloads_are_understood_by_bolt(fake_slack) -> None:
    app = App(
        signing_secret="s3cret",
        client=WebClient(base_url=fake_slack.api_url, token="xoxb-test"),
    )
    seen: dict[str, dict] = {}

    @app.command("/pgsessions")
    def on_command(ack, command, respond):
        ack()
        seen["command"] = command
        respond(text=f"listing {command['text']}", response_type="in_channel")

    @app.action("approve")
    def on_approve(ack, body, action, respond):
        ack()
        seen["action"] = {"action": action, "body": body}
        respond(text="approved", replace_original=True)

    @app.view("confirm")
    def on_submit(ack, view, body):
        ack()
        seen["view"] = view

    server: WSGIServer = make_server("127.0.0.1", 0, SlackRequestHandler(app), handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        sender = SlackSender(f"http://127.0.0.1:{server.server_port}", "s3cret", fake=fake_slack)
        status, _, _ = sender.slash("list primary", user_id="U1")
        assert status == 200
        assert seen["command"]["text"] == "list primary" and seen["command"]["user_id"] == "U1"
        listing = fake_slack.wait_for_response(predicate=lambda r: r.text == "listing list primary")
        assert listing.response_type == "in_channel"

        msg = fake_slack.last_message("C1")
        assert msg is not None and msg.text == "listing list primary"
        msg.blocks = [
            {
                "type": "actions",
                "block_id": "req",
                "elements": [
                    {
                        "type": "button",
                        "action_id": "approve",
                        "value": "r-1",
                        "text": {"type": "plain_text", "text": "OK"},
                    }
                ],
            }
        ]
        reply = sender.block_action("approve", None, user_id="U2", message=msg)
        assert reply.status == 200
        assert seen["action"]["action"]["value"] == "r-1" and seen["action"]["action"]["block_id"] == "req"
        assert seen["action"]["body"]["user"]["id"] == "U2"
        assert seen["action"]["body"]["message"]["ts"] == msg.ts
        fake_slack.wait_for_response(reply.response_name)
        assert msg.text == "approved"

        assert sender.view_submission("confirm", "meta", {"reason": {"why": "stuck"}}).status == 200
        assert seen["view"]["private_metadata"] == "meta"
        assert seen["view"]["state"]["values"]["reason"]["why"]["value"] == "stuck"

        assert sender.slash("list", bad_signature=True).status == 401
        assert sender.slash("list", stale=True).status == 401
    finally:
        server.shutdown()
        server.server_close()


def test_fake_accepts_form_and_get_encodings_and_reports_timeouts(fake_slack) -> None:
    blocks = [_section("from a form")]
    form = urlencode({"token": "xoxb-test", "channel": "C9", "text": "form", "blocks": json.dumps(blocks)})
    req = urllib.request.Request(fake_slack.api_url + "chat.postMessage", data=form.encode(), method="POST")
    req.add_header("Content-Type", "application/x-www-form-urlencoded")
    with urllib.request.urlopen(req) as resp:  # local fake
        body = json.loads(resp.read())
    assert body["ok"] and fake_slack.messages[("C9", body["ts"])].blocks == blocks

    fake_slack.users = {"U7": {"real_name": "Grace", "tz": "Europe/Paris"}}
    with urllib.request.urlopen(fake_slack.api_url + "users.info?user=U7&token=xoxb-test") as resp:
        user = json.loads(resp.read())["user"]
    assert (user["real_name"], user["tz"]) == ("Grace", "Europe/Paris")

    client = WebClient(base_url=fake_slack.api_url, token="xoxb-test")
    client.chat_delete(channel="C9", ts=body["ts"])
    assert fake_slack.messages[("C9", body["ts"])].deleted
    assert client.chat_postEphemeral(channel="C9", user="U1", text="psst")["message_ts"]
    assert fake_slack.ephemerals[0].ephemeral_user == "U1"

    fake_slack.delay("auth.test", 0.2)
    started = time.monotonic()
    client.auth_test()
    assert time.monotonic() - started >= 0.2
    with pytest.raises(AssertionError, match="recent traffic"):
        fake_slack.wait_for("views.open", timeout=0.1)
