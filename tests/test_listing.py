"""`/pgsessions <env>`: the listing, through the bot's real HTTP surface, against real PostgreSQL."""

from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from tests.harness.bot import BotUnderTest, env_config

SECRET_PW = "pw-s3cret-Xy"


def blocks_text(params: dict) -> str:
    return json.dumps(params.get("blocks") or []) + (params.get("text") or "")


def session_sections(params: dict) -> dict[int, str]:
    """pid -> the section text drawn for it."""
    out = {}
    for b in params.get("blocks") or []:
        if b.get("type") == "section":
            t = b["text"]["text"]
            if t.startswith(":") and "*pid " in t:
                pid = int(t.split("*pid ", 1)[1].split("*", 1)[0])
                out[pid] = t
    return out


@pytest.fixture(scope="module")
def trouble(pg):
    """Real sessions for every category on database appdb, as app_user."""
    pg.primary.sql("CREATE TABLE IF NOT EXISTS t_listing (id int primary key, v int)", user="app_user", dbname="appdb")
    pg.primary.sql("INSERT INTO t_listing VALUES (1, 0) ON CONFLICT DO NOTHING", user="app_user", dbname="appdb")
    conns = []

    def conn(app):
        c = pg.primary.connect(user="app_user", dbname="appdb", autocommit=True, application_name=app)
        conns.append(c)
        return c

    holder = conn("holder")
    holder.execute("BEGIN")
    holder.execute("UPDATE t_listing SET v = 1 WHERE id = 1")
    waiter = conn("waiter")
    sleeper = conn("sleeper")
    idler = conn("idler")
    idler.execute("SELECT 1")

    def run(c, sql):
        try:
            c.execute(sql)
        except psycopg.Error:
            pass

    threads = [
        threading.Thread(target=run, args=(waiter, "UPDATE t_listing SET v = 2 WHERE id = 1"), daemon=True),
        threading.Thread(target=run, args=(sleeper, "SELECT pg_sleep(120) /* sleeper */"), daemon=True),
    ]
    for t in threads:
        t.start()
    time.sleep(1.3)  # every category's threshold below is 1s
    pids = {name: c.info.backend_pid for name, c in
            (("holder", holder), ("waiter", waiter), ("sleeper", sleeper), ("idler", idler))}
    yield pids
    for c in conns:
        try:
            pg.primary.sql("SELECT pg_terminate_backend(%s)", (c.info.backend_pid,))
        except Exception:
            pass
    for c in conns:
        try:
            c.close()
        except Exception:
            pass


def config(pg, **env_overrides):
    env = env_config(pg, thresholds={"long_running": "1s", "idle_in_transaction": "1s", "idle": "1s"}, **env_overrides)
    return {"environments": {"test": env}}


@pytest.fixture
def bot(pg, fake_slack):
    with BotUnderTest(config(pg), fake_slack) as b:
        yield b
    fake_slack.assert_clean()


def test_every_category_shows_with_duration_and_blocker(bot, trouble):
    params = bot.listing("test --db appdb")
    sections = session_sections(params)
    for name in ("holder", "waiter", "sleeper", "idler"):
        assert trouble[name] in sections, f"{name} missing from {list(sections)}"
    holder = sections[trouble["holder"]]
    assert "`blocking`" in holder and "`idle-tx`" in holder and "blocks 1 session" in holder
    assert "idle in transaction" in holder and "transaction open" in holder
    waiter = sections[trouble["waiter"]]
    assert "`blocked`" in waiter and f"blocked by* pid {trouble['holder']}" in waiter
    assert "waits on Lock/transactionid" in waiter
    sleeper = sections[trouble["sleeper"]]
    assert "`long-running`" in sleeper and "pg_sleep(120)" in sleeper
    assert "query *1s*" in sleeper or "query *2s*" in sleeper or "query *3s*" in sleeper
    idler = sections[trouble["idler"]]
    assert "`idle`" in idler and "app `idler`" in idler and "user `app_user`" in idler
    # worst first: the blocker leads, the merely idle comes last
    order = list(sections)
    assert order.index(trouble["holder"]) < order.index(trouble["sleeper"]) < order.index(trouble["idler"])
    assert order.index(trouble["waiter"]) < order.index(trouble["idler"])
    # summary: counts per category and connections vs max_connections
    summary = params["blocks"][1]["text"]["text"]
    assert "1 blocking others" in summary and "connections in use" in summary and " of 1200 " in summary
    assert params["text"].startswith("Sessions on test:")
    assert params["channel"] == "C1"


def test_the_bots_own_connections_never_appear(bot, trouble):
    bot.listing("test")  # makes sure the bot's pool has a connection
    params = bot.listing("test --min 0s")
    own = {r[0] for r in bot_pids(bot)}
    assert own, "the bot should hold at least one connection"
    assert not (own & set(session_sections(params))), "the bot listed its own connection"


def bot_pids(bot) -> list[tuple[int]]:
    # the pids of every connection that carries the bot's application_name, seen by a superuser
    dsn = bot.config_dict["environments"]["test"]["dsn"].replace("user=pgsessions_bot", "user=postgres")
    with psycopg.connect(dsn, autocommit=True) as c:
        return c.execute("SELECT pid FROM pg_stat_activity WHERE application_name = 'pgsessions'").fetchall()


@pytest.mark.parametrize(
    "text, present, absent",
    [
        ("test active --db appdb", ["sleeper"], ["idler", "holder"]),
        ("test idle-tx --db appdb", ["holder"], ["idler", "sleeper"]),
        ("test blocked --db appdb", ["waiter", "holder"], ["idler", "sleeper"]),
        ("test idle --app idler", ["idler"], ["holder", "waiter", "sleeper"]),
        ("test --user app_user --app sleeper", ["sleeper"], ["idler"]),
        ("test active idle --db appdb", ["sleeper", "idler"], []),
    ],
)
def test_filters(bot, trouble, text, present, absent):
    sections = session_sections(bot.listing(text))
    for name in present:
        assert trouble[name] in sections, (text, name)
    for name in absent:
        assert trouble[name] not in sections, (text, name)


def test_min_duration_hides_young_sessions(bot, trouble):
    params = bot.listing("test --db appdb --min 1h")
    assert not session_sections(params)
    assert "No session needs attention" in blocks_text(params)
    assert "--min 1h" in blocks_text(params)


def test_standby_listing(bot, pg):
    c = pg.standby.connect(user="app_user", dbname="postgres", application_name="standby-sleeper")
    t = threading.Thread(target=lambda: _quiet(c.execute, "SELECT pg_sleep(30)"), daemon=True)
    t.start()
    try:
        time.sleep(1.3)
        params = bot.listing("test replica1 active")
        assert "Sessions on test / replica1 (standby)" in params["text"]
        assert c.info.backend_pid in session_sections(params)
        # the same pid is not on the primary's listing
        assert c.info.backend_pid not in session_sections(bot.listing("test active"))
    finally:
        pg.standby.sql("SELECT pg_terminate_backend(%s)", (c.info.backend_pid,))
        t.join(5)
        c.close()


def _quiet(fn, *a):
    try:
        fn(*a)
    except Exception:
        pass


@pytest.mark.parametrize(
    "text, expect",
    [
        ("", ["*Usage*", "`test`"]),
        ("help", ["*Usage*", "*Environments:* `test`"]),
        ("nope", ["Unknown environment `nope`", "Known environments: `test`"]),
        ("test replica9", ["no standby or filter called `replica9`", "`replica1`", "Usage: `/pgsessions <env> [<standby>]"]),
        ("test --min soon", ["`soon` is not a duration", "`/pgsessions help` for the rest"]),
        ("test --min 99999999999999h", ["too long: durations are at most 366d"]),
        ("test --frobnicate", ["I don't know the filter `--frobnicate`", "`/pgsessions help` for the rest"]),
        ("audit test --frobnicate", ["`audit` does not know `--frobnicate`", "Usage: `/pgsessions audit [<env>]"]),
        ("test --app", ["`--app` needs a value"]),
        ('test --app "unclosed', ["a quote is not closed"]),
        ("test --min 5m --min 6m", ["given twice"]),
        ("audit nope", ["Unknown environment `nope`"]),
    ],
)
def test_bad_input_gets_a_clear_answer(bot, text, expect):
    reply = bot.command(text)
    assert reply.status == 200
    answer = reply.json()
    assert answer["response_type"] == "ephemeral"
    for piece in expect:
        assert piece in answer["text"], (text, piece, answer["text"])
    assert "Traceback" not in answer["text"]
    # one usage line, not the whole help text every time
    assert answer["text"].count("/pgsessions") <= 3 and "*Usage*" not in answer["text"] or text in ("", "help")
    assert not bot.fake.calls_for("chat.postMessage")


def test_filters_tolerate_slack_typography(bot, trouble):
    # Slack turns -- into an em dash and quotes into curly ones
    sections = session_sections(bot.listing("test \u2014app \u201cidler\u201d"))
    assert trouble["idler"] in sections and trouble["sleeper"] not in sections


def test_unreachable_database_is_named_without_secrets(pg, fake_slack):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    env = env_config(pg)
    env["dsn"] = f"host=127.0.0.1 port={closed_port} dbname=postgres user=pgsessions_pw password={SECRET_PW}"
    with BotUnderTest({"environments": {"broken": env}}, fake_slack) as b:
        started = time.monotonic()
        reply = b.command("broken")
        assert reply.status == 200
        r = fake_slack.wait_for_response(reply.response_name, timeout=10)
        assert time.monotonic() - started < 6
        assert "`broken` (primary) is unavailable" in r.text and "connection refused" in r.text
        assert r.response_type == "ephemeral"
        everything = json.dumps([c.params for c in fake_slack.calls]) + json.dumps([x.body for x in fake_slack.responses])
        assert SECRET_PW not in everything
        assert not fake_slack.calls_for("chat.postMessage")


def test_hanging_host_answers_within_the_connect_timeout(pg, fake_slack):
    # a server that accepts TCP and never says a word
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    env = env_config(pg, timeouts={"connect": "2s", "statement": "2s"})
    env["dsn"] = f"host=127.0.0.1 port={port} dbname=postgres user=pgsessions_bot"
    try:
        with BotUnderTest({"environments": {"hung": env}}, fake_slack) as b:
            started = time.monotonic()
            reply = b.command("hung")
            assert reply.status == 200
            r = fake_slack.wait_for_response(reply.response_name, timeout=10)
            elapsed = time.monotonic() - started
            assert "`hung` (primary) is unavailable" in r.text
            assert "2s" in r.text
            assert elapsed < 5, elapsed
    finally:
        listener.close()


def test_wrong_password_is_explained_without_echoing_it(pg, fake_slack):
    env = env_config(pg)
    env["dsn"] = pg.primary.dsn(user="pgsessions_pw") + " password=wrong-Pa55word"
    with BotUnderTest({"environments": {"pw": env}}, fake_slack) as b:
        reply = b.command("pw")
        r = fake_slack.wait_for_response(reply.response_name, timeout=10)
        assert "password authentication failed" in r.text
        assert "wrong-Pa55word" not in r.text


def test_slow_statement_is_reported(pg, fake_slack, trouble):
    # holding an ACCESS EXCLUSIVE lock on pg_authid's catalog is not possible; instead give the bot a
    # statement timeout so short that the listing itself cannot finish
    env = env_config(pg, timeouts={"connect": "2s", "statement": "1ms"})
    with BotUnderTest({"environments": {"slow": env}}, fake_slack) as b:
        reply = b.command("slow")
        r = fake_slack.wait_for_response(reply.response_name, timeout=10)
        assert "`slow` (primary) is unavailable" in r.text or "statement timeout" in r.text


def test_bad_signature_and_stale_timestamp_get_401(bot):
    assert bot.slack.slash("test", signature="v0=" + "0" * 64).status == 401
    assert bot.slack.slash("test", timestamp=int(time.time()) - 301).status == 401
    assert not bot.fake.calls_for("chat.postMessage"), "a rejected request must not do anything"
    assert bot.slack.slash("test").status == 200


def test_healthz(bot):
    import urllib.request

    with urllib.request.urlopen(bot.url + "/healthz", timeout=5) as r:
        # the first line is the liveness answer; the second says whether the state store answers (issue 23 §6)
        assert r.status == 200 and r.read() == b"ok\nstate store: up\n"


def test_a_thousand_connections_render_within_slacks_limits(pg, fake_slack):
    env = env_config(pg, thresholds={"long_running": "1s", "idle_in_transaction": "1s", "idle": "0s"})
    conns: list[psycopg.Connection] = []

    def open_one(i):
        return psycopg.connect(pg.primary.dsn(user="app_user", dbname="appdb"), application_name=f"pool-{i % 7}",
                               autocommit=True)

    try:
        with ThreadPoolExecutor(16) as ex:
            conns = list(ex.map(open_one, range(1000)))
        with BotUnderTest({"environments": {"big": env}}, fake_slack) as b:
            params = b.listing("big --db appdb", timeout=30)
            blocks = params["blocks"]
            assert len(blocks) <= 50
            assert all(len(bl.get("text", {}).get("text", "")) <= 3000 for bl in blocks)
            text = blocks_text(params)
            assert "Showing the worst" in text and "more not shown" in text and "--app NAME" in text
            shown = len(session_sections(params))
            assert 5 <= shown <= 22
            summary = blocks[1]["text"]["text"]
            n_idle = int(summary.split(":zzz: ", 1)[1].split(" ", 1)[0])
            assert n_idle >= 1000
        fake_slack.assert_clean()
    finally:
        for c in conns:
            c.close()
