"""Issue 25: listings through PgBouncer, real PgBouncer (Debian's 1.18 and a 1.24 built from source) in
front of the real test primary, driven through signed Slack requests against the fake Slack."""

from __future__ import annotations

import contextlib
import io
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import yaml

from bot.cli import build_parser
from tests.harness.bot import BotUnderTest, env_config
from tests.harness.fake_slack import FakeSlack
from tests.harness.flows import (
    answer_with,
    click,
    find_button,
    post_listing,
    request_kill,
    request_message_saved,
    wait_state,
)
from tests.harness.pgbouncer import STATS_ROLE, Bouncer, start_pgbouncer
from tests.harness.waiting import wait_until
from tests.test_details import click_details, view_text
from tests.test_watch import approve_through_bot

BUILDS = ("old", "new")
WATCH_CHANNEL = "C0POOLALERTS"
MODES = ("session", "transaction")


def text_of(msg) -> str:
    return json.dumps(msg.blocks) + (msg.text or "")


def sections(msg) -> dict[int, str]:
    """pid -> the section drawn for it."""
    out = {}
    for b in msg.blocks or []:
        if b.get("type") == "section":
            t = b["text"]["text"]
            if t.startswith(":") and "*pid " in t:
                out[int(t.split("*pid ", 1)[1].split("*", 1)[0])] = t
    return out


def local_port(conn: psycopg.Connection) -> int:
    s = socket.fromfd(conn.pgconn.socket, socket.AF_INET, socket.SOCK_STREAM)
    try:
        return s.getsockname()[1]
    finally:
        s.close()


def server_pid_of(bouncer: Bouncer, app: str) -> int:
    """The backend pid of the server connection linked to the client with this application name (PgBouncer
    shows non-ASCII characters as '?': compared up to the first of them)."""
    clients = {c["ptr"]: c for c in bouncer.admin("SHOW CLIENTS")}
    ascii_part = app.encode("ascii", "replace").decode().split("?", 1)[0]
    for s in bouncer.admin("SHOW SERVERS"):
        if s["link"] and str(clients.get(s["link"], {}).get("application_name", "")).startswith(ascii_part):
            return int(s["remote_pid"])
    raise AssertionError(f"no server linked to a client {app!r}: {bouncer.admin('SHOW SERVERS')}")


def pooler_config(bouncers: dict[str, Bouncer], **timeouts: str) -> dict:
    return {name: {"dsn": b.admin_dsn(), **({"timeouts": timeouts} if timeouts else {})}
            for name, b in bouncers.items()}


@pytest.fixture(scope="module")
def bouncers(pg) -> Iterator[dict[tuple[str, str], Bouncer]]:
    started: dict[tuple[str, str], Bouncer] = {}
    try:
        for build in BUILDS:
            for mode in MODES:
                started[(build, mode)] = start_pgbouncer(pg.primary, build, pool_mode=mode, pool_size=3)
        yield started
    finally:
        for b in started.values():
            b.stop()


@pytest.fixture
def clients() -> Iterator[list[psycopg.Connection]]:
    conns: list[psycopg.Connection] = []
    yield conns
    for c in conns:
        try:
            c.close()
        except Exception:
            pass


@pytest.fixture(scope="module")
def bot(pg, bouncers) -> Iterator[BotUnderTest]:
    fake = FakeSlack(token="xoxb-test").start()
    poolers = pooler_config({f"{build}-{mode}": b for (build, mode), b in bouncers.items()})
    config = {"environments": {"prod": env_config(pg, poolers=poolers)}}
    b = BotUnderTest(config, fake).start()
    try:
        yield b
    finally:
        b.close()
        fake.stop()


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("mode", MODES)
def test_client_idle_in_transaction_is_named_through_the_pooler(bot, bouncers, clients, build, mode):
    bouncer = bouncers[(build, mode)]
    app = f"billing-{build}-{mode}"
    c = bouncer.connect(application_name=app)
    clients.append(c)
    c.execute("BEGIN")
    c.execute("SELECT 1")
    pid = server_pid_of(bouncer, app)
    msg = post_listing(bot, "prod idle-tx --min 0s")
    drawn = sections(msg)
    assert pid in drawn, f"pid {pid} not listed: {text_of(msg)[:1500]}"
    row = drawn[pid]
    assert f"via pooler `{build}-{mode}`" in row
    assert "pool `app_user/appdb`" in row
    assert f"{mode} pooling" in row
    assert f"client `127.0.0.1:{local_port(c)}`" in row
    assert f"app `{app.replace('-', '-')}`" in row
    if build == "old":
        assert "has no `KILL_CLIENT`" in row  # the row says why Disconnect client is not offered
    else:
        assert "KILL_CLIENT" not in row


@pytest.mark.parametrize("build", BUILDS)
def test_idle_pool_members_are_counted_not_listed_and_not_swept(bot, pg, bouncers, clients, build):
    bouncer = bouncers[(build, "transaction")]
    app = f"sweepapp-{build}"
    # a client whose transaction ended: its server connection went back to the pool, still carrying the
    # client's application_name on the server
    pooled = bouncer.connect(application_name=app)
    clients.append(pooled)
    pooled.execute("SELECT 1")
    members = [int(s["remote_pid"]) for s in bouncer.admin("SHOW SERVERS") if not s["link"]]
    assert members, bouncer.admin("SHOW SERVERS")
    member_apps = {r[0]: r[1] for r in pg.primary.sql(
        "SELECT pid, application_name FROM pg_stat_activity WHERE pid = ANY(%s)", (members,)) or []}
    member = next(p for p in members if member_apps.get(p) == app)
    # a direct application connection, idle, with the same application name: a real leak candidate
    direct = pg.primary.connect(user="app_user", dbname="appdb", application_name=app)
    clients.append(direct)
    direct.execute("SELECT 1")
    direct_pid = direct.info.backend_pid
    msg = post_listing(bot, f"prod idle --app {app} --min 0s")
    drawn = sections(msg)
    assert direct_pid in drawn, text_of(msg)[:1500]
    assert member not in drawn, f"pool member {member} listed as an idle application connection"
    assert f"pooler `{build}-transaction`" in text_of(msg)
    assert "idle in pool `app_user/appdb`" in text_of(msg)
    # the sweep (Terminate these N) covers the direct connection only
    button = find_button(msg, "Terminate these 1")
    assert button is not None, text_of(msg)[:2000]
    assert f"pid {member}" not in text_of(msg)
    counts = msg.blocks[1]["text"]["text"]
    assert ":zzz: 1 idle" in counts, counts


def test_hung_pooler_costs_one_line_not_the_listing(pg, bouncers, clients, fake_slack):
    live = bouncers[("new", "session")]
    hung = start_pgbouncer(pg.primary, "old", pool_mode="session", pool_size=2)
    try:
        poolers = {
            "live": {"dsn": live.admin_dsn(), "timeouts": {"connect": "2s", "statement": "1s"}},
            "hung": {"dsn": hung.admin_dsn(), "timeouts": {"connect": "2s", "statement": "1s"}},
        }
        config = {"environments": {"prod": env_config(pg, poolers=poolers)}}
        with BotUnderTest(config, fake_slack) as bot:
            c = live.connect(application_name="through-live")
            clients.append(c)
            c.execute("BEGIN")
            c.execute("SELECT 1")
            pid = server_pid_of(live, "through-live")
            started = time.monotonic()
            post_listing(bot, "prod idle-tx --min 0s", timeout=20)  # both answering: what a listing takes here
            normal = time.monotonic() - started
            hung.pause()
            started = time.monotonic()
            msg = post_listing(bot, "prod idle-tx --min 0s", timeout=20)
            elapsed = time.monotonic() - started
            text = text_of(msg)
            assert "pooler `hung` was not read" in text, text[:1500]
            assert "via pooler `live`" in sections(msg)[pid]
            # the hung pooler's deadline is 2 s + 1 s (+0.3 s margin): the listing waits that at most, on top
            # of what it takes anyway (and a second for the scheduling of a loaded machine)
            assert elapsed < 3.3 + normal + 1.0, (elapsed, normal)
    finally:
        hung.stop()


HOSTILE = "<!channel> *b* `tick` <https://e.x|c> \u202eevil"  # within 63 bytes: PostgreSQL keeps it whole


def test_hostile_application_name_through_the_pooler(bot, bouncers, clients):
    bouncer = bouncers[("new", "transaction")]
    c = bouncer.connect(application_name=HOSTILE)
    clients.append(c)
    c.execute("BEGIN")
    c.execute("SELECT 1")
    pid = server_pid_of(bouncer, HOSTILE)
    msg = post_listing(bot, "prod idle-tx --min 0s")
    row = sections(msg)[pid]
    assert "<!channel>" not in row and "<https://" not in row
    assert "&lt;!channel&gt;" in row
    assert "\u202e" not in row  # (PgBouncer itself passes it on as '?')
    assert row.count("&lt;!channel&gt;") == 2, row  # PostgreSQL's application_name and the pooler's client
    assert "`tick`" not in row


def test_check_reports_each_poolers_version_and_features(pg, bouncers, tmp_path, monkeypatch):
    monkeypatch.delenv("SLACK_BOT_TOKEN", raising=False)
    old, new = bouncers[("old", "session")], bouncers[("new", "session")]
    poolers = {"pgb-old": {"dsn": old.admin_dsn()}, "pgb-new": {"dsn": new.admin_dsn()},
               "pgb-stats": {"dsn": new.admin_dsn(user=STATS_ROLE)},  # in stats_users only: enough to read
               "pgb-down": {"dsn": f"host=127.0.0.1 port={_closed_port()} dbname=pgbouncer user=pgsessions_bot",
                            "timeouts": {"connect": "1s", "statement": "1s"}}}
    config = {"state": f"sqlite:///{tmp_path / 'state.db'}",
              "environments": {"prod": env_config(pg, poolers=poolers)}}
    path = tmp_path / "pgsessions.yml"
    path.write_text(yaml.safe_dump(config))
    args = build_parser().parse_args(["check", "--config", str(path), "--json", "--no-slack"])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = args.func(args)
    report = {p["name"]: p for p in json.loads(out.getvalue())["poolers"]}
    assert code == 1  # the pooler that does not answer fails the check
    assert report["pgb-old"]["version"] == "1.18.0" and report["pgb-old"]["status"] == "warn"
    assert not any("KILL_CLIENT (Disconnect" in f for f in report["pgb-old"]["features"])
    assert any("has no KILL_CLIENT" in f["message"] for f in report["pgb-old"]["findings"])
    assert report["pgb-new"]["version"] == "1.24.1"
    assert any("KILL_CLIENT (Disconnect" in f for f in report["pgb-new"]["features"])
    assert any("CVE-2026-6667" in f["message"] for f in report["pgb-new"]["findings"])
    assert report["pgb-down"]["status"] == "fail"
    assert report["pgb-stats"]["version"] == "1.24.1" and report["pgb-stats"]["status"] != "fail"
    text = subprocess.run([str(Path(sys.executable).with_name("pgsessions")), "check", "--config", str(path),
                           "--no-slack"], capture_output=True, text=True, timeout=60).stdout
    assert "PGBOUNCER" in text and "1.24.1" in text and "pooler pgb-down: reachable" in text, text


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("build", BUILDS)
def test_details_show_the_poolers_view(bot, bouncers, clients, build):
    bouncer = bouncers[(build, "transaction")]
    app = f"details-{build}"
    c = bouncer.connect(application_name=app)
    clients.append(c)
    c.execute("BEGIN")
    c.execute("SELECT 1")
    pid = server_pid_of(bouncer, app)
    msg = post_listing(bot, f"prod idle-tx --app {app} --min 0s")
    text = view_text(click_details(bot, msg, pid))
    assert "*Pooler*" in text, text[:2000]
    assert f"pooler `{build}-transaction`" in text and "pool `app_user/appdb`" in text
    assert "transaction pooling" in text
    assert f"address `127.0.0.1:{local_port(c)}`" in text and f"app `{app}`" in text
    assert "waited for a server" in text
    if build == "old":
        assert "has no `KILL_CLIENT`" in text
    else:
        assert "Disconnect client ends that client only" in text


class WaitingPool:
    """A transaction-pooling PgBouncer with one server connection, held by a client idle in transaction
    (``holder``), and a client waiting for it."""

    def __init__(self, pg, build: str = "new", holder_app: str = "billing"):
        self.bouncer = start_pgbouncer(pg.primary, build, pool_mode="transaction", pool_size=1)
        self.holder = self.bouncer.connect(application_name=holder_app)
        self.holder.execute("BEGIN")
        self.holder.execute("SELECT 1")
        self.holder_pid = server_pid_of(self.bouncer, holder_app)
        self.waiter = self.bouncer.connect(application_name="waiter")
        self._thread = threading.Thread(target=self._wait, daemon=True)
        self._thread.start()
        wait_until(lambda: any(p["cl_waiting"] for p in self.bouncer.admin("SHOW POOLS")), 10, "a waiting client")

    def _wait(self) -> None:
        try:
            self.waiter.execute("SELECT 1")
        except psycopg.Error:
            pass

    def close(self, pg) -> None:
        pg.primary.sql("SELECT pg_terminate_backend(%s)", (self.holder_pid,))
        self._thread.join(10)
        for c in (self.holder, self.waiter):
            try:
                c.close()
            except Exception:
                pass
        self.bouncer.stop()


@pytest.fixture
def waiting_pool(pg) -> Iterator[WaitingPool]:
    wp = WaitingPool(pg)
    try:
        yield wp
    finally:
        wp.close(pg)


def test_pool_command_shows_waiting_pools_worst_first_with_their_holders(pg, bouncers, waiting_pool, fake_slack):
    poolers = {"busy": {"dsn": waiting_pool.bouncer.admin_dsn()},
               "calm": {"dsn": bouncers[("old", "session")].admin_dsn()}}
    config = {"environments": {"prod": env_config(pg, poolers=poolers)}}
    with BotUnderTest(config, fake_slack) as bot:
        msg = post_listing(bot, "prod pool")
        text = text_of(msg)
        pools = [b["text"]["text"] for b in msg.blocks if b.get("type") == "section" and "· pooler `" in b["text"]["text"]]
        assert pools and "pooler `busy`" in pools[0], pools  # the waiting pool first
        assert "*1 waiting*" in pools[0] and "transaction pooling" in pools[0] and "pool size 1" in pools[0]
        assert "*Holding pool `app_user/appdb`*" in text
        assert waiting_pool.holder_pid in sections(msg)
        assert find_button(msg, f"Terminate {waiting_pool.holder_pid}") is not None
        assert find_button(msg, f"Details {waiting_pool.holder_pid}") is not None
        # a host without poolers says how to configure one
        reply = bot.command("prod replica1 pool")
        assert reply.status == 200
        assert "has no PgBouncer configured" in reply.body + json.dumps([r.text for r in fake_slack.responses])


def test_pool_waiting_alert_names_the_holder_and_an_approved_terminate_resolves_it(pg, fake_slack):
    wp = WaitingPool(pg, build="old", holder_app="billing")
    try:
        env = env_config(pg, poolers={"pgb": {"dsn": wp.bouncer.admin_dsn()}},
                         watch={"channel": WATCH_CHANNEL, "check_every": "1s", "consecutive": 2, "remind_every": "1h",
                                "pool_waiting": "1s"})
        with BotUnderTest({"environments": {"prod": env}}, fake_slack, scheduler=True) as bot:
            msg = wait_until(lambda: next((m for m in fake_slack.messages_in(WATCH_CHANNEL) if not m.thread_ts
                                           and "Clients waiting in a pool" in m.text), None), 15,
                             "the pool_waiting alert\n" + fake_slack.summary())
            text = text_of(msg)
            assert "`app_user/appdb` (pooler `pgb`): 1 client waiting" in text, text[:2000]
            assert "oldest transaction" in text and f"pid {wp.holder_pid}, app `billing`, idle in transaction" in text
            assert find_button(msg, f"Terminate {wp.holder_pid}") is not None
            assert find_button(msg, f"Details {wp.holder_pid}") is not None
            approve_through_bot(bot, fake_slack, msg, f"Terminate {wp.holder_pid}")
            done = wait_until(lambda: (m := fake_slack.messages[(msg.channel, msg.ts)]).text.startswith("Resolved")
                              and m, 20, "the alert resolved\n" + fake_slack.summary())
            assert f"pid {wp.holder_pid}" in done.text
    finally:
        wp.close(pg)


# --- Disconnect client (PgBouncer 1.24+) -------------------------------------------------------------


def client_ids(bouncer: Bouncer) -> set[int]:
    return {int(c["id"]) for c in bouncer.admin("SHOW CLIENTS") if c.get("id") is not None}


def client_id_of(bouncer: Bouncer, conn: psycopg.Connection) -> int:
    port = local_port(conn)
    return next(int(c["id"]) for c in bouncer.admin("SHOW CLIENTS") if c["port"] == port)


def request_disconnect(bot, msg, client_id: int, user: str = "U1"):
    """Click Disconnect client, submit the form: the approval request as the fake stored it."""
    fake = bot.fake
    button = find_button(msg, f"Disconnect client {client_id}")
    assert button is not None, text_of(msg)[:2000]
    n_views = len(fake.calls_for("views.open", ok=True))
    assert bot.slack.block_action(button["action_id"], button["value"], user_id=user, message=msg).status == 200
    opened = wait_until(lambda: fake.calls_for("views.open", ok=True)[n_views:], 10, "views.open")
    view = opened[0].params["view"]
    view = json.loads(view) if isinstance(view, str) else view
    assert "Disconnect client" in json.dumps(view)
    n_posts = len(fake.calls_for("chat.postMessage", ok=True))
    reply = bot.slack.view_submission("pgs_kill_request", private_metadata=view["private_metadata"],
                                      state_values={"reason": {"reason": "stuck client"}}, user_id=user)
    assert reply.status == 200 and "errors" not in (reply.body or ""), reply.body
    posts = wait_until(lambda: [c for c in fake.calls_for("chat.postMessage", ok=True)[n_posts:]
                                if "asks to" in json.dumps(c.params.get("blocks"))], 10, "the approval request")
    return request_message_saved(bot, fake.messages[(posts[0].response["channel"], posts[0].response["ts"])])


def test_disconnect_client_needs_approval_then_disconnects_the_client_only(bot, pg, bouncers, clients):
    bouncer = bouncers[("new", "session")]
    app = "disc-app"
    c = bouncer.connect(application_name=app)
    clients.append(c)
    c.execute("SELECT 1")
    cid = client_id_of(bouncer, c)
    pid = server_pid_of(bouncer, app)
    msg = post_listing(bot, f"prod idle --app {app} --min 0s")
    approval = request_disconnect(bot, msg, cid)
    text = text_of(approval)
    assert f"client id* {cid}" in text and "disconnect the PgBouncer client linked to" in text
    assert cid in client_ids(bouncer)  # a request alone does nothing
    # the requester cannot approve their own request: still connected
    assert click(bot, approval, "Approve", user="U1").status == 200
    answer_with(bot.fake, "another approver must decide it")
    assert cid in client_ids(bouncer)
    # an approver's approval acts
    assert click(bot, approval, "Approve", user="U2").status == 200
    wait_state(bot, approval, f"client {cid} disconnected by the pooler")
    assert cid not in client_ids(bouncer)
    with pytest.raises(psycopg.OperationalError):
        c.execute("SELECT 1")
    # the server connection stays (session pooling: back in the pool), it was not terminated
    assert pg.primary.sql("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,))


def test_disconnect_client_refused_after_the_client_reconnects_with_a_new_id(bot, bouncers, clients):
    bouncer = bouncers[("new", "session")]
    app = "reconnecting"
    c = bouncer.connect(application_name=app)
    clients.append(c)
    c.execute("SELECT 1")
    old_id = client_id_of(bouncer, c)
    msg = post_listing(bot, f"prod idle --app {app} --min 0s")
    approval = request_disconnect(bot, msg, old_id)
    c.close()  # the client goes away and comes back: a new connection, a new id
    again = bouncer.connect(application_name=app)
    clients.append(again)
    again.execute("SELECT 1")
    new_id = client_id_of(bouncer, again)
    assert new_id != old_id
    assert click(bot, approval, "Approve", user="U2").status == 200
    wait_state(bot, approval, f"client {old_id} is no longer connected to the pooler: nothing was done")
    assert new_id in client_ids(bouncer)
    again.execute("SELECT 1")  # untouched


def test_disconnect_client_is_refused_on_pgbouncer_without_kill_client(bot, bouncers, clients):
    bouncer = bouncers[("old", "session")]
    app = "old-client"
    c = bouncer.connect(application_name=app)
    clients.append(c)
    c.execute("SELECT 1")
    pid = server_pid_of(bouncer, app)
    msg = post_listing(bot, f"prod idle --app {app} --min 0s")
    assert "has no `KILL_CLIENT`" in sections(msg)[pid]
    assert not any(find_button(msg, label) for label in [f"Disconnect client {i}" for i in range(0, 50)])
    # a hand-made Disconnect client on the session's Terminate token is refused with the reason
    terminate = find_button(msg, f"Terminate {pid}")
    forged = terminate["action_id"].replace(":terminate:", ":disconnect_client:")
    assert bot.slack.block_action(forged, terminate["value"], user_id="U1", message=msg).status == 200
    answer_with(bot.fake, "has no `KILL_CLIENT`")


def test_disconnect_client_from_the_details_modal_opens_its_request_form(bot, bouncers, clients):
    bouncer = bouncers[("new", "session")]
    app = "details-disc"
    c = bouncer.connect(application_name=app)
    clients.append(c)
    c.execute("SELECT 1")
    cid, pid = client_id_of(bouncer, c), server_pid_of(bouncer, app)
    msg = post_listing(bot, f"prod idle --app {app} --min 0s")
    view = click_details(bot, msg, pid)
    button = next((e for b in view["blocks"] if b["type"] == "actions" for e in b["elements"]
                   if e["text"]["text"] == f"Disconnect client {cid}"), None)
    assert button is not None, view_text(view)[:2000]
    n_push = len(bot.fake.calls_for("views.push", ok=True))
    assert bot.slack.block_action(button["action_id"], button["value"], user_id="U1", view=view).status == 200
    pushed = wait_until(lambda: bot.fake.calls_for("views.push", ok=True)[n_push:], 10, "the request form")
    form = pushed[0].params["view"]
    form = json.loads(form) if isinstance(form, str) else form
    assert json.loads(form["private_metadata"])["action"] == "disconnect_client"
    assert f"client id* {cid}" in json.dumps(form)


def test_terminate_request_names_the_client_it_will_hit(bot, bouncers, clients):
    bouncer = bouncers[("old", "transaction")]
    app = "hit-by-terminate"
    c = bouncer.connect(application_name=app)
    clients.append(c)
    c.execute("BEGIN")
    c.execute("SELECT 1")
    pid = server_pid_of(bouncer, app)
    approval = request_kill(bot, "prod", app, pid)
    text = text_of(approval)
    assert f"*client linked when listed* `127.0.0.1:{local_port(c)}`" in text, text[:2000]
    assert f"*app* `{app}`" in text and "via pooler* `old-transaction`" in text
