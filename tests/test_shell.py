"""The terminal chat (`pgsessions shell`): the real bot driven through standard input, against real
PostgreSQL, and the plain-text rendering of every kind of block the bot draws."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
import yaml
from psycopg import sql as pgsql

from bot.postgres.models import Category, Filters, Listing, ServerInfo, Session
from bot.render.approval import audit_list, pending_list, request_message, request_modal
from bot.render.common import actions, button, context, divider, header, section
from bot.render.listing import render_listing
from bot.shell.mrkdwn import Names, to_text
from bot.shell.render import BlockRenderer
from tests.harness.bot import env_config
from tests.harness.lag import hold_replay
from tests.harness.pgcluster import APP_DB, APP_ROLE

USERS = {"alice": "U1", "bob": "U2"}
NAMES = Names(users={"U1": "alice", "U2": "bob"}, groups={"S0DBAS": "dbas"}, channels={"C0SHELL": "shell"})


# --- rendering (pure) ------------------------------------------------------------------------------


def numbered() -> BlockRenderer:
    seen: dict[str, int] = {}

    def number(element: dict, block_id: str | None) -> int:
        return seen.setdefault(element["action_id"], len(seen) + 1)

    return BlockRenderer(NAMES, number)


@pytest.mark.unit
def test_mrkdwn_mentions_dates_links_and_escapes():
    text = (
        "*<@U1>* asks <!subteam^S0DBAS> and <!subteam^S9|@oncall> · <@U7> "
        "<!date^1700000000^{date_short_pretty} {time_secs}|2023-11-14 22:13 UTC> "
        "<https://runbooks.example/lag_1|runbook> <#C0SHELL> <#C5|ops> <!here> "
        "&lt;insufficient privilege&gt; a &amp;&amp; b &amp;lt; :warning: idle_in_transaction "
        "_slanted_ ~gone~ `SELECT '*x*' &lt; 1`"
    )
    assert to_text(text, NAMES) == (
        "@alice asks @dbas and @oncall · @U7 2023-11-14 22:13 UTC runbook (https://runbooks.example/lag_1) "
        "#shell #ops @here <insufficient privilege> a && b &lt; \u26a0\ufe0f idle_in_transaction "
        "slanted gone `SELECT '*x*' < 1`"
    )
    # a date without fallback still reads as a date; a bare link stays a link
    assert to_text("<!date^0^{date}>  <mailto:a@b.c>") == "1970-01-01 00:00 UTC  mailto:a@b.c"
    assert to_text("```\nSELECT *a* FROM t &gt; x\n```") == "```\nSELECT *a* FROM t > x\n```"


@pytest.mark.unit
def test_every_block_kind_as_text():
    blocks = [
        header("Sessions on prod"),
        section("*pid 4211* on `prod`", block_id="s1"),
        {"type": "section", "fields": [{"type": "mrkdwn", "text": "*Replay lag*\n2m 03s"},
                                       {"type": "mrkdwn", "text": "just text &amp; more"},
                                       {"type": "plain_text", "text": "plain *not bold*"}]},
        {"type": "section", "text": {"type": "mrkdwn", "text": "with a button"},
         "accessory": button("Open", "acc:open", "v")},
        {"type": "section", "text": {"type": "plain_text", "text": "with an image"},
         "accessory": {"type": "image", "image_url": "http://x/i.png", "alt_text": "graph"}},
        context("needs approval from <@U2>", "second element"),
        divider(),
        actions("kill:t", button("Cancel 4211", "pgs_kill:cancel:t", "t"),
                button("Terminate 4211", "pgs_kill:terminate:t", "t", style="danger")),
        {"type": "actions", "elements": [
            {"type": "static_select", "action_id": "pick", "placeholder": {"type": "plain_text", "text": "Env"},
             "options": [{"text": {"type": "plain_text", "text": "prod"}, "value": "prod"},
                         {"text": {"type": "plain_text", "text": "stage"}, "value": "stage"}]},
            {"type": "overflow", "action_id": "more",
             "options": [{"text": {"type": "plain_text", "text": "Audit"}, "value": "a"},
                         {"text": {"type": "plain_text", "text": "Pending"}, "value": "p"}]}]},
        {"type": "image", "image_url": "http://x/y.png", "alt_text": "lag graph"},
        {"type": "rich_text", "elements": [{"type": "rich_text_section", "elements": [
            {"type": "text", "text": "hi "}, {"type": "user", "user_id": "U2"}]}]},
        {"type": "mystery"},
    ]
    lines = numbered().blocks(blocks)
    assert lines == [
        "== Sessions on prod ==",
        "pid 4211 on `prod`",
        "- Replay lag: 2m 03s",
        "- just text & more",
        "- plain *not bold*",
        "with a button",
        "[1] Open",
        "with an image",
        "[image: graph]",
        "> needs approval from @bob  second element",
        "-" * 40,
        "[2] Cancel 4211   [3] Terminate 4211",
        "[4] Env (prod | stage)   [5] more: Audit | Pending",
        "[image: lag graph] http://x/y.png",
        "hi @bob",
        "[mystery block]",
    ]


@pytest.mark.unit
def test_message_without_blocks_shows_its_text_and_attachments():
    r = BlockRenderer(NAMES)
    assert r.message("hello <@U1>\nsecond", None) == ["hello @alice", "second"]
    assert r.message("fallback only", [header("H")]) == ["== H =="]
    lines = r.message("t", None, [{"title": "Lag", "text": "*2m*", "fields": [{"title": "host", "value": "r1"}]}])
    assert lines == ["t", "| Lag", "| 2m", "| - host: r1"]


@pytest.mark.unit
def test_the_request_modal_and_its_input():
    target = {"env": "prod", "host": "replica1", "payload": {
        "pid": 4211, "user": "app", "database": "appdb", "application": "web", "client_addr": None,
        "state": "active", "duration_what": "query", "duration_secs": 75, "backend_start": "2026-11-25T10:00:00",
        "query": "SELECT <x> & y"}}
    view = request_modal(target, "terminate", "tok", "C0SHELL", True)
    lines = BlockRenderer(NAMES).view(view)
    assert lines[0] == "== Terminate session (a form) =="
    assert "Ask an approver to terminate this session on `prod` standby `replica1`:" in lines
    assert "`SELECT <x> & y`" in lines
    reason = next(line for line in lines if line.startswith("Reason"))
    assert reason == ("Reason: <text, several lines, up to 500 characters: "
                      "Why should this session be stopped? Incident link, ticket…>")
    assert lines[-1] == "[Request]   [Close]"
    optional = request_modal(target, "cancel", "tok", "C0SHELL", False)
    assert "Reason (optional): <text" in "\n".join(BlockRenderer(NAMES).view(optional))


@pytest.mark.unit
def test_the_approval_message_pending_list_and_audit():
    now = time.time()
    req = {"id": "r1", "env": "prod", "host": "primary", "action": "terminate", "state": "pending", "requester": "U1",
           "reason": "stuck <since> deploy", "created_at": now, "expires_at": now + 900,
           "target": {"pid": 4211, "user": "app", "backend_start": "2026-11-25T10:00:00"}}
    msg = request_message(req, ["U2", "S0DBAS"], [], 1, ["U2", "S0DBAS"])
    lines = numbered().message(msg["text"], msg["blocks"])
    assert lines[0] == "== Terminate request: pid 4211 on prod =="
    assert "@alice asks to terminate pid 4211 on `prod`." in lines
    assert "Reason: stuck <since> deploy" in lines
    assert any(line.startswith("> Requested ") and "needs 1 more approval from @bob, @dbas" in line for line in lines)
    assert lines[-1] == "[1] Approve   [2] Deny   [3] Withdraw"
    pend = pending_list([req], now)
    assert "Terminate pid 4211 on `prod` · by @alice" in "\n".join(BlockRenderer(NAMES).message(pend["text"], pend["blocks"]))
    audit = audit_list([{"at": now, "env": "prod", "event": "terminate:approved", "pid": 4211, "actor": "U2",
                         "result": None}], "prod")
    text = "\n".join(BlockRenderer(NAMES).message(audit["text"], audit["blocks"]))
    assert "`prod` Terminate: approved pid 4211 @bob" in text and "<!date" not in text


@pytest.mark.unit
def test_a_listing_renders_with_numbered_buttons_and_no_markup_left():
    server = ServerInfo(150020, "15.20 (Debian)", 100, 7, False, 1, "pgsessions_bot", False, True, True)

    def sess(pid: int, **kw) -> Session:
        base = dict(pid=pid, backend_start=datetime(2026, 11, 25, 10, 0, tzinfo=UTC), user="app", database="appdb",
                    application="web", client_addr=None, state="active", wait_event_type=None, wait_event=None,
                    query="SELECT '<b>' FROM t", blocked_by=(), blocking_count=0,
                    categories=(Category.LONG_RUNNING,), query_secs=400.0, xact_secs=400.0, state_secs=400.0)
        base.update(kw)
        return Session(**base)

    listing = Listing("prod", "primary", server, (
        sess(4211), sess(4212, state="idle in transaction", categories=(Category.IDLE_TX,), query="UPDATE t SET x=1"),
    ), Filters(), {"long_running": 300, "idle_in_transaction": 60, "idle": 3600})
    msg = render_listing(listing, tokens={4211: "a", 4212: "b"})
    text = "\n".join(numbered().message(msg["text"], msg["blocks"]))
    assert "== Sessions on prod ==" in text
    assert "[1] Cancel 4211   [2] Terminate 4211" in text
    assert "[3] Terminate 4212" in text and "Cancel 4212" not in text
    assert "`SELECT '<b>' FROM t`" in text
    for markup in ("&lt;", "&gt;", "&amp;", "<!date", "<@", "*pid"):
        assert markup not in text, markup


# --- the shell against real PostgreSQL -------------------------------------------------------------


def shell_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLACK_", "PGSESSIONS_CONFIG", "PG"))}
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"  # emoji print as characters whatever the locale
    return env


def run_shell(tmp_path: Path, config: dict | None, script: str, *args: str, env: dict | None = None,
              timeout: float = 120) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "bot.cli", "shell", *args]
    if config is not None:
        path = tmp_path / "shell.yml"
        path.write_text(yaml.safe_dump(config))
        cmd += ["--config", str(path)]
    return subprocess.run(cmd, input=script, capture_output=True, text=True, timeout=timeout, cwd=tmp_path,
                          env=env or shell_env())


def config_for(pg, **overrides) -> dict:
    return {"environments": {"test": env_config(pg, **overrides)}, "users": dict(USERS)}


class Backends:
    """Sessions of app_user on appdb that need attention, created for one test and ended after it."""

    def __init__(self, node):
        self.node = node
        self.conns: list[psycopg.Connection] = []
        self.threads: list[threading.Thread] = []

    def active(self, app: str, sql: str = "SELECT pg_sleep(600)") -> int:
        conn = self.node.connect(user=APP_ROLE, dbname=APP_DB, application_name=app)
        self.conns.append(conn)
        pid = conn.info.backend_pid

        def run():
            try:
                conn.execute(sql)
            except psycopg.Error:
                pass  # terminated by the test or by the bot

        t = threading.Thread(target=run, daemon=True)
        t.start()
        self.threads.append(t)
        return pid

    def idle_in_transaction(self, app: str) -> int:
        conn = self.node.connect(user=APP_ROLE, dbname=APP_DB, application_name=app, autocommit=False)
        conn.execute("SELECT 1")
        self.conns.append(conn)
        return conn.info.backend_pid

    def wait_listed(self, pids: list[int], older_than: float = 2.5, timeout: float = 20) -> None:
        """Until every pid has been in its state longer than the 2 s thresholds of env_config."""
        deadline = time.monotonic() + timeout
        while True:
            rows = self.node.sql(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s) "
                "AND now() - coalesce(state_change, query_start) > make_interval(secs => %s)",
                (pids, older_than),
            )
            if rows[0][0] == len(pids):
                return
            assert time.monotonic() < deadline, f"sessions {pids} never got old enough"
            time.sleep(0.1)

    def alive(self, pid: int) -> bool:
        return bool(self.node.sql("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)))

    def close(self) -> None:
        pids = [c.info.backend_pid for c in self.conns]
        if pids:
            self.node.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = ANY(%s)", (pids,))
        for c in self.conns:
            try:
                c.close()
            except psycopg.Error:
                pass
        for t in self.threads:
            t.join(timeout=5)


@pytest.fixture
def backends(pg):
    b = Backends(pg.primary)
    try:
        yield b
    finally:
        b.close()


def clean(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    return result.stdout


def test_listing_help_and_mistakes_through_a_script(pg, backends, tmp_path):
    tag = uuid.uuid4().hex[:6]
    slow = backends.active(f"shell-slow-{tag}")
    idle_tx = backends.idle_in_transaction(f"shell-idletx-{tag}")
    backends.wait_listed([slow, idle_tx])
    script = "\n".join([
        f"/pgsessions test --app shell-slow-{tag}",
        "# a comment line",
        f"test idle-tx --app shell-idletx-{tag}",
        "/pgsessions nosuchenv",
        "help",
        "as nobody",
        "click 99",
        "wait 1",
        "whoami",
    ]) + "\n"
    started = time.monotonic()
    out = clean(run_shell(tmp_path, config_for(pg), script))
    took = time.monotonic() - started
    # each line echoed after the prompt, in order, with the bot's answers between them
    prompts = [line for line in out.splitlines() if line.startswith("alice in #shell> ")]
    assert [p.removeprefix("alice in #shell> ") for p in prompts] == script.splitlines()
    first, second = out.split(f"alice in #shell> test idle-tx --app shell-idletx-{tag}")
    assert "== Sessions on test ==" in first
    assert f"[1] Cancel {slow}   [2] Terminate {slow}   [3] Details {slow}" in first
    assert "`SELECT pg_sleep(600)`" in first and f"app `shell-slow-{tag}`" in first
    assert f"[4] Terminate {idle_tx}" in second and f"Cancel {idle_tx}" not in second
    assert "only Terminate ends it" in second
    assert "Unknown environment `nosuchenv`" in second and "only visible to you" in second
    assert "click N" in second  # the shell's help
    assert "Who is `nobody`? Known people: alice, bob" in second
    assert "There is no button [99]." in second
    assert "(no message within 1s)" in second
    assert out.rstrip().endswith("You are @alice (U1) in #shell.")
    assert backends.alive(slow) and backends.alive(idle_tx), "listing must not signal anything"
    print(f"listing script took {took:.1f}s")


def test_request_and_approval_as_a_second_person_terminate_the_backend(pg, backends, tmp_path):
    tag = uuid.uuid4().hex[:6]
    victim = backends.active(f"shell-victim-{tag}")
    backends.wait_listed([victim])
    script = "\n".join([
        f"test --app shell-victim-{tag}",
        f"click Terminate {victim}",
        "",  # the reason is required: asked again
        "stuck since the deploy",
        "request",
        "click Approve",  # alice asked: she may not approve her own request
        "as bob",
        "click Approve",
        "/pgsessions audit test",
    ]) + "\n"
    out = clean(run_shell(tmp_path, config_for(pg), script))
    assert "== Terminate session (a form) ==" in out
    assert "(Reason is required: Slack does not send the form without it)" in out
    assert "Reason (\\n for a new line): stuck since the deploy" in out
    assert "== Terminate request: pid" in out and "@alice asks to terminate" in out
    assert "Reason: stuck since the deploy" in out
    assert "another approver must decide it" in out
    assert "You are now @bob (U2)." in out
    after_bob = out.split("bob in #shell> click Approve", 1)[1]
    assert "· edited ·" in after_bob and "\u2705 Done" in after_bob
    assert "Approved by @bob" in after_bob and f"backend {victim} terminated" in after_bob
    assert "Terminate: approved pid" in after_bob and "@bob" in after_bob
    deadline = time.monotonic() + 5
    while backends.alive(victim):
        assert time.monotonic() < deadline, "the approved terminate did not end the backend"
        time.sleep(0.05)


def test_builtin_config_uses_libpq_defaults_and_two_people(pg, tmp_path):
    if pg.external:
        pytest.skip("needs the managed test cluster (trust authentication on 127.0.0.1)")
    env = shell_env()
    env.update(PGHOST=pg.primary.host, PGPORT=str(pg.primary.port), PGUSER="pgsessions_bot")
    out = clean(run_shell(tmp_path, None, "local\nas approver\nwhoami\n", env=env))
    assert "no config file: using the local PostgreSQL" in out
    assert "`as approver` to act as someone else" in out
    assert "local primary: PostgreSQL" in out and "as pgsessions_bot" in out
    assert "== Sessions on local ==" in out
    assert out.rstrip().endswith("You are @approver (U0LOCAL2) in #shell.")


def test_builtin_config_says_what_to_do_without_postgres(tmp_path):
    env = shell_env()
    env.update(PGHOST="127.0.0.1", PGPORT="1", PGCONNECT_TIMEOUT="2")
    result = run_shell(tmp_path, None, "local\n", env=env)
    assert result.returncode == 2, result
    assert "no PostgreSQL answered" in result.stderr and "connection refused" in result.stderr
    assert "make demo" in result.stderr and "--config FILE" in result.stderr
    assert result.stdout == ""


LAG_READY = importlib.util.find_spec("bot.slack.lag_handlers") is not None


@pytest.mark.skipif(not LAG_READY, reason="bot/lagwatch (scheduled lag alerts) is not in this tree yet")
def test_a_lag_alert_appears_and_resolves_after_an_approved_terminate(pg, tmp_path):
    if pg.standby is None or pg.external:
        pytest.skip("needs the managed primary + standby")
    table = "shell_lag_" + uuid.uuid4().hex[:6]
    ident = pgsql.Identifier(table)
    pg.primary.sql(pgsql.SQL("CREATE TABLE {} (id int PRIMARY KEY)").format(ident), user=APP_ROLE, dbname=APP_DB)
    pg.primary.sql(pgsql.SQL("INSERT INTO {} SELECT generate_series(1, 100)").format(ident), user=APP_ROLE, dbname=APP_DB)
    pg.wait_replayed()
    pg.set_standby_delay("-1")
    holder = None
    try:
        # the primary needs ACCESS EXCLUSIVE on the table the standby session holds, and keeps writing
        holder = hold_replay(pg, table, application_name="shell-report", user=APP_ROLE, owner=APP_ROLE,
                             dbname=APP_DB).holder
        pid = holder.info.backend_pid
        config = config_for(pg, lag_alert={"channel": "C0ALERTS", "threshold": "1s", "check_every": "1s",
                                           "consecutive": 1, "remind_every": "1h"})
        script = "\n".join([
            "wait 30 Replication lag on",
            f"click Terminate {pid}",
            "holds replay of test back",
            "request",
            "as bob",
            "click Approve",
            "wait 30 Resolved: replication lag",
        ]) + "\n"
        out = clean(run_shell(tmp_path, config, script))
        alert = out.split("alice in #shell> wait 30 Replication lag on", 1)[1]
        assert "pgsessions in #alerts" in alert and "#C0ALERTS" not in alert
        assert "\U0001f6a8 Replication lag on" in alert and "replica1" in alert
        assert f"Terminate {pid}" in alert
        assert "(no message" not in out, out
        # the alert (message #1) is edited into its resolution, during the approval or the wait after it
        resolved = out.split("bob in #shell> click Approve", 1)[1]
        assert "--- #1 · edited · pgsessions in #alerts" in resolved
        assert "== \u2705 Resolved: replication lag on test / replica1 ==" in resolved
        assert not pg.standby.sql("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,))
    finally:
        if holder is not None:
            holder.close()
        pg.standby.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                       "WHERE application_name = 'shell-report'")
        pg.set_standby_delay("30s")
        pg.wait_replayed(timeout=15)


# --- the local Slack Web API (in-process, no database) ---------------------------------------------


class Seen:
    def __init__(self):
        self.events: list[tuple[str, object]] = []

    def posted(self, msg):
        self.events.append(("posted", msg.no))

    def edited(self, msg):
        self.events.append(("edited", msg.no))

    def deleted(self, msg):
        self.events.append(("deleted", msg.no))

    def view_opened(self, view):
        self.events.append(("view", view.id))

    def view_updated(self, view):
        self.events.append(("view_updated", view.id))

    def notice(self, text):
        self.events.append(("notice", text))


@pytest.mark.unit
def test_local_web_api_answers_like_slack():
    import json
    import urllib.request

    from slack_sdk import WebClient
    from slack_sdk.errors import SlackApiError

    from bot.shell.webapi import Workspace

    seen = Seen()
    ws = Workspace("xoxb-t", users={"U1": "alice"}, groups={"S0DBAS": ["U1"]}, listener=seen).start()
    try:
        client = WebClient(token="xoxb-t", base_url=ws.api_url)
        assert client.auth_test()["user_id"]
        with pytest.raises(SlackApiError) as bad_token:
            WebClient(token="xoxb-other", base_url=ws.api_url).auth_test()
        assert bad_token.value.response["error"] == "invalid_auth"
        posted = client.chat_postMessage(channel="C1", text="t", blocks=[header("H")])
        no = ws._by_ts[("C1", posted["ts"])]
        # an unchanged update is not shown again; a changed one is
        client.chat_update(channel="C1", ts=posted["ts"], text="t", blocks=[header("H")])
        client.chat_update(channel="C1", ts=posted["ts"], text="t2", blocks=[header("H2")])
        assert seen.events == [("posted", no), ("edited", no)]
        # Slack's limits: rejected, and said so in the terminal
        with pytest.raises(SlackApiError) as too_many:
            client.chat_postMessage(channel="C1", text="t", blocks=[divider()] * 51)
        assert too_many.value.response["error"] == "invalid_blocks"
        assert seen.events[-1][0] == "notice" and "no more than 50" in str(seen.events[-1][1])
        assert client.usergroups_users_list(usergroup="S0DBAS")["users"] == ["U1"]
        assert client.users_info(user="U1")["user"]["name"] == "alice"
        # a trigger_id works once and only if this workspace issued it
        tid = ws.trigger_id("U1")
        view = {"type": "modal", "title": {"type": "plain_text", "text": "T"}, "blocks": [section("x")]}
        assert client.views_open(trigger_id=tid, view=view)["view"]["id"]
        with pytest.raises(SlackApiError) as reused:
            client.views_open(trigger_id=tid, view=view)
        assert reused.value.response["error"] == "invalid_trigger_id"
        # response_url: replace_original edits the message it belongs to; 5 uses at most
        url = ws.response_url("C1", "U1", no)

        def respond(body: dict) -> int:
            req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=5) as resp:  # local URL
                    return resp.status
            except urllib.error.HTTPError as err:
                return err.code

        assert respond({"replace_original": True, "text": "replaced"}) == 200
        assert ws.message(no).text == "replaced" and seen.events[-1] == ("edited", no)
        assert respond({"text": "just for you"}) == 200
        eph = ws.message(max(ws.messages))
        assert eph.ephemeral_to == "U1" and eph.text == "just for you"
        assert [respond({"text": "again"}) for _ in range(4)] == [200, 200, 200, 404]
    finally:
        ws.stop()


def test_demo_shows_the_trouble_and_removes_everything(tmp_path):
    import re

    from bot.shell.cluster import ClusterError, bindir

    try:
        bindir()
    except ClusterError as exc:
        pytest.skip(str(exc))
    script = "\n".join([
        "demo",
        "demo replica1",
        "wait 40 Replication lag on",
        "demo idle --app api-pool --older 1s",
    ]) + "\n"
    result = subprocess.run([sys.executable, "-m", "bot.shell.demo"], input=script, capture_output=True, text=True,
                            timeout=180, cwd=tmp_path, env=shell_env())
    out = clean(result)
    base = re.search(r"\(in (/\S+); config", out).group(1)
    assert f"Stopped the demo servers and removed {base}." in out
    assert not os.path.exists(base)
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            assert base not in cmdline.read_bytes().decode(errors="replace"), "a demo server is still running"
        except OSError:
            pass
    listing = out.split("> demo replica1")[0]
    assert "app `billing-worker`" in listing and "blocks 1 session" in listing and "blocked by pid" in listing
    assert "app `monthly-report`" in listing and "pg_sleep(3600)" in listing
    standby = out.split("> demo replica1")[1].split("> wait 40")[0]
    assert "Sessions on demo / replica1 (standby)" in standby and "app `analytics`" in standby
    alert = out.split("> wait 40 Replication lag on")[1]
    assert "pgsessions in #alerts" in alert and "#C0ALERTS" not in alert and "lock conflict" in alert
    assert "Terminate these 8" in out.split("> demo idle --app api-pool --older 1s")[1]


def test_emoji_codes_render_as_characters_or_words_and_channels_by_name():
    from bot.config import parse_config
    from bot.shell.localconfig import channel_names
    from bot.shell.mrkdwn import Names, can_print_emoji

    text = ":turtle: *pid 7* :zzz: :lock: `:lock: in code` :not_ours:"
    assert to_text(text, Names()) == "\U0001f422 pid 7 \U0001f4a4 \U0001f512 `:lock: in code` :not_ours:"
    assert to_text(text, Names(emoji="word")) == "[slow] pid 7 [idle] [lock] `:lock: in code` :not_ours:"
    assert BlockRenderer(Names(emoji="word")).text({"type": "plain_text", "text": ":rotating_light: Lag"}) == "[alert] Lag"
    assert can_print_emoji("utf-8") and not can_print_emoji("ascii") and not can_print_emoji("latin-1")
    cfg = parse_config({"environments": {"prod": {
        "dsn": "dbname=postgres", "standbys": {"r1": "dbname=postgres"},
        "lag_alert": {"channel": "C0ALERTS"}, "access": {"channels": ["C0OPS"], "approvers": ["U1"]}}}}, environ={})
    names = channel_names(cfg, ("C0SHELL", "shell"))
    assert names == {"C0SHELL": "shell", "C0ALERTS": "alerts", "C0OPS": "ops"}
    assert to_text("Alerts in <#C0ALERTS>", Names(channels=names)) == "Alerts in #alerts"


def test_a_terminal_without_utf8_gets_words(tmp_path, pg):
    env = {**shell_env(), "PYTHONIOENCODING": "ascii"}
    out = run_shell(tmp_path, config_for(pg), "test --min 1h --db nosuchdb\nquit\n", env=env)
    assert "[ok] No session needs attention" in out.stdout, out.stdout + out.stderr
    assert "\u2705" not in out.stdout and "UnicodeEncodeError" not in out.stderr
