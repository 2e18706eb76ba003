"""Literal redaction with PostgreSQL's own lexer (bot/postgres/redact.py)."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bot.postgres.redact import UNREDACTABLE, redact

CASES = [
    # quoted quotes
    ("SELECT * FROM t WHERE name = 'it''s'", "SELECT * FROM t WHERE name = ?"),
    ("SELECT 'a''b''''c'", "SELECT ?"),
    # E'' strings with escapes (an escaped quote does not end the string)
    (r"SELECT E'it\'s a \\ secret\n'", "SELECT ?"),
    (r"SELECT e'\\', x FROM t", "SELECT ?, x FROM t"),
    # dollar quoting, with quotes and other dollar signs inside
    ("SELECT $$it's 'quoted'$$", "SELECT ?"),
    ("SELECT $tag$ a $$ b 'c' $tag$, 1", "SELECT ?, ?"),
    ("DO $body$ BEGIN RAISE NOTICE 'x'; END $body$", "DO ?"),
    # comments, including nested C comments holding quotes
    ("SELECT 1 -- user alice@example.com\nFROM t", "SELECT ? -- ?\nFROM t"),
    ("SELECT /* a /* nested 'x' */ still comment */ 2", "SELECT /* ? */ ?"),
    ("/* request_id='abc' */ SELECT x FROM t", "/* ? */ SELECT x FROM t"),
    # arrays
    ("SELECT ARRAY[1,2,3]", "SELECT ARRAY[?,?,?]"),
    ("SELECT '{1,2}'::int[]", "SELECT ?::int[]"),
    ("SELECT ARRAY['a','b']::text[]", "SELECT ARRAY[?,?]::text[]"),
    # casts and typed literals
    ("SELECT '5'::int, int '5', interval '5 minutes', CAST('x' AS text)",
     "SELECT ?::int, int ?, interval ?, CAST(? AS text)"),
    ("SELECT date '2024-01-01' + 1", "SELECT date ? + ?"),
    # numbers
    ("SELECT 1e10, .5, 1.5e-3, 0x1F, 0o17, 0b101, 1_000, 42", "SELECT ?, ?, ?, ?, ?, ?, ?, ?"),
    ("SELECT -5", "SELECT -?"),
    # bit / hex / unicode strings
    ("SELECT B'0101', X'1F', U&'d\\0061t\\+000061'", "SELECT ?, ?, ?"),
    ("SELECT N'national'", "SELECT N?"),
    # identifiers in double quotes are kept, even with quotes and spaces inside
    ('SELECT "Secret Col", "a""b" FROM "MyTable" WHERE "x" = \'y\'',
     'SELECT "Secret Col", "a""b" FROM "MyTable" WHERE "x" = ?'),
    # IN lists
    ("DELETE FROM t WHERE id IN (1, 2, 3) AND k IN ('a','b')", "DELETE FROM t WHERE id IN (?, ?, ?) AND k IN (?,?)"),
    # parameters, keywords and booleans stay
    ("UPDATE t SET a = $1, b = NULL, c = true WHERE id = $2", "UPDATE t SET a = $1, b = NULL, c = true WHERE id = $2"),
    # non-ASCII text and identifiers
    ("SELECT 'grüße €' FROM \"tä\"", 'SELECT ? FROM "tä"'),
    # multiple statements, newlines kept
    ("BEGIN;\nUPDATE a SET x = 'y';\nCOMMIT;", "BEGIN;\nUPDATE a SET x = ?;\nCOMMIT;"),
]


@pytest.mark.unit
@pytest.mark.parametrize(("sql", "expected"), CASES)
def test_literals_become_placeholders(sql, expected):
    assert redact(sql) == expected


TRUNCATED = [
    # a query cut at track_activity_query_size in the middle of each kind of literal
    ("SELECT * FROM users WHERE email = 'alice@exa", "SELECT * FROM users WHERE email = ?"),
    ("SELECT * FROM users WHERE email = E'alice\\'s sec", "SELECT * FROM users WHERE email = ?"),
    ("SELECT $q$ top secret", "SELECT ?"),
    ("SELECT $q$ top secret $", "SELECT ?"),
    ("SELECT 1 /* secret note", "SELECT ? /* ? */"),
    ('SELECT "Col', "SELECT ?"),
    ("SELECT B'01", "SELECT ?"),
    ("SELECT 1.5e", "SELECT ?"),
    ("SELECT 0x", "SELECT ?"),
]


@pytest.mark.unit
@pytest.mark.parametrize(("sql", "expected"), TRUNCATED)
def test_truncated_queries_hide_the_unterminated_rest(sql, expected):
    assert redact(sql) == expected


@pytest.mark.unit
def test_numbers_glued_to_names_do_not_stop_redaction():
    # PostgreSQL <= 14 reads 123abc as "123 AS abc"; the PostgreSQL 17 lexer in pglast rejects it
    assert redact("SELECT 123abc, 'secret' FROM t") == "SELECT ?, ? FROM t"


@pytest.mark.unit
def test_every_truncation_point_keeps_the_secret_hidden():
    secret = "Zq9Wx7Kv"
    template = (
        "/* ctx @S */ SELECT \"Ident\", E'@S\\'', $x$@S$x$ FROM t "
        "WHERE a = '@S''' AND b IN (1, 2e5) -- @S\nAND c = U&'@S'"
    )
    sql = template.replace("@S", secret)
    for cut in range(len(sql) + 1):
        out = redact(sql[:cut])
        for n in range(2, len(secret) + 1):
            assert secret[:n] not in out, (cut, sql[:cut], out)
        assert out == "" or out.strip() or not sql[:cut].strip()


@pytest.mark.unit
def test_empty_and_none():
    assert redact("") == ""
    assert redact(None) == ""
    assert redact("   \n") == "   \n"


@pytest.mark.unit
def test_unparseable_text_is_hidden_not_shown(monkeypatch):
    from bot.postgres import redact as mod

    def boom(_text):
        raise RuntimeError("lexer exploded")

    monkeypatch.setattr(mod, "_scan", boom)
    assert redact("SELECT 'secret'") == UNREDACTABLE


@pytest.mark.unit
def test_idempotent():
    once = redact("SELECT 'a', 1 FROM t WHERE x IN (1,2) -- c")
    assert redact(once) == once


@pytest.mark.unit
@settings(max_examples=400, deadline=None)
@given(st.text(max_size=300))
def test_never_raises_on_arbitrary_text(text):
    out = redact(text)
    assert isinstance(out, str)


_literal = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40)


@pytest.mark.unit
@settings(max_examples=300, deadline=None)
@given(_literal, st.sampled_from(["std", "escape", "dollar"]))
def test_string_contents_never_survive(content, style):
    marker = "QQ8MARK"
    value = marker + content
    if style == "std":
        lit = "'" + value.replace("'", "''") + "'"
    elif style == "escape":
        lit = "E'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    else:
        tag = "$zz$"
        if tag in value:
            return
        lit = f"{tag}{value}{tag}"
    sql = f"SELECT {lit} AS v FROM t WHERE k = {lit}"  # noqa: S608 - lexer input, never executed
    out = redact(sql)
    assert marker not in out
    if style == "std" and "\\" in value and out == UNREDACTABLE:
        return  # with standard_conforming_strings off it might read differently: hidden whole (fail closed)
    assert out.endswith("AS v FROM t WHERE k = ?")


# --- standard_conforming_strings = off, and fuzzing (issue 12 §5) -------------------------------------

SCS_OFF = [
    # with standard_conforming_strings = off these are ONE literal each; read with it on they are not
    r"SELECT * FROM users WHERE pw = 'pa\'ss Zq9Wx7Kv' AND id = 1",
    r"SELECT 'a\'', 'Zq9Wx7Kv'",
    r"SELECT 'x\' || 'Zq9Wx7Kv' || '\'",
    "SELECT 'a'\n'b\\'', 'Zq9Wx7Kv'",
    r"SELECT 'truncated \'Zq9Wx7Kv",
    r"SELECT 'ends in a backslash\'",
]


@pytest.mark.unit
@pytest.mark.parametrize("sql", SCS_OFF)
def test_text_that_reads_differently_without_standard_strings_is_hidden(sql):
    out = redact(sql)
    assert out == UNREDACTABLE == "query hidden: could not be redacted"
    assert "Zq9" not in out and "ss" not in out


@pytest.mark.unit
@pytest.mark.parametrize(("sql", "expected"), [
    # backslashes that do not change where a string ends read the same both ways: still redacted, shown
    (r"SELECT 'C:\temp' AS p, 1", "SELECT ? AS p, ?"),
    (r"SELECT x ~ '^\d+$' FROM t", "SELECT x ~ ? FROM t"),
    (r"SELECT 'a\\' || 'b'", "SELECT ? || ?"),
    (r"SELECT E'pa\'ss', 'q'", "SELECT ?, ?"),  # E'' strings escape under both settings
    ("SELECT $q$ a \\' b $q$, 'c'", "SELECT ?, ?"),  # nothing escapes inside dollar quotes
    ("SELECT /* a \\' /* b */ c' */ 1", "SELECT /* ? */ ?"),  # nor in (nested) comments
])
def test_backslashes_that_do_not_matter_keep_the_text(sql, expected):
    assert redact(sql) == expected


SECRET = "Zq9Wx7Kv"
_content = st.lists(st.sampled_from([*"ab '\\$*/-\n", SECRET]), max_size=12).map(lambda t: SECRET + "".join(t))


@st.composite
def _piece(draw) -> str:
    """One token-ish piece of SQL; every literal and comment holds the secret."""
    kind = draw(st.sampled_from(["std_on", "std_off", "e", "dollar", "c", "nested", "line", "word", "num", "punct"]))
    body = draw(_content)
    if kind == "std_on":  # a plain string as a server with standard_conforming_strings = on reads it
        return "'" + body.replace("'", "''") + "'"
    if kind == "std_off":  # ... and as one with it off: backslashes escape
        return "'" + body.replace("\\", "\\\\").replace("'", draw(st.sampled_from(["''", "\\'"]))) + "'"
    if kind == "e":
        return "E'" + body.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if kind == "dollar":
        return "$t$" + body.replace("$t$", "") + "$t$" if not body.endswith("$") else "$t$" + body + " $t$"
    if kind == "c":
        return "/* " + body.replace("*", "") + " */"
    if kind == "nested":
        inner = body.replace("*", "")
        return f"/* x /* {inner} */ {inner} */"
    if kind == "line":
        return "-- " + body.replace("\n", " ") + "\n"
    if kind == "word":
        return draw(st.sampled_from(["SELECT", "FROM", "t", "WHERE", "pw", '"Col"', "$1", "AND", "E", "U&"]))
    if kind == "num":
        return draw(st.sampled_from(["1", "4.5", "1e9", "0x1F"]))
    return draw(st.sampled_from([",", "(", ")", "=", "||", "::text", ";"]))


@pytest.mark.unit
@settings(max_examples=500, deadline=None)
# no newline between pieces: 'a'<newline>'b' is one literal to PostgreSQL (and would glue the pieces)
@given(st.lists(_piece(), min_size=1, max_size=8), st.lists(st.sampled_from([" ", "  ", "\t"]), min_size=8, max_size=8),
       st.integers(min_value=0, max_value=400))
# found by this test: an E'' string whose comment-and-newline continuation holds a backslash swallows the
# next quote, and the literal after it reads as an identifier
@example(pieces=["E'Zq9Wx7Kv'", "-- Zq9Wx7Kv\n", "'Zq9Wx7Kv\\'", "'Zq9Wx7Kv'"], gaps=[" "] * 8, cut=0)
def test_no_literal_survives_whatever_the_setting_and_wherever_the_text_is_cut(pieces, gaps, cut):
    sql = "".join(p + g for p, g in zip(pieces, gaps, strict=False))
    for text in (sql, sql[:cut]):
        out = redact(text)
        assert SECRET[:4] not in out and SECRET[4:] not in out, (text, out)


@pytest.mark.unit
def test_lag_culprits_are_redacted_with_the_same_rule():
    from datetime import UTC, datetime

    from bot.postgres.lag import culprit_session

    row = dict(pid=1, backend_start=datetime(2026, 1, 1, tzinfo=UTC), usename="u", datname="d", application_name="a",
               client_addr=None, state="active", wait_event_type=None, wait_event=None, query_secs=1.0, xact_secs=1.0,
               state_secs=1.0, is_superuser=False, bot_is_super=False, bot_can_signal=True, bot_has_privs=True,
               backend_xmin=None, query=r"SELECT 'pa\'ss Zq9Wx7Kv'")
    assert culprit_session(row, holding_back=True, redact_queries=True).query == UNREDACTABLE
    assert "Zq9" in culprit_session(row, holding_back=True, redact_queries=False).query


# --- end to end: nothing downstream of the read sees a literal ----------------------------------------


def test_listing_with_redact_queries_never_shows_literals(pg, fake_slack):
    import json
    import uuid

    from sqlalchemy import select

    from bot.state.store import targets
    from tests.harness.bot import BotUnderTest, env_config

    app = "redact-" + uuid.uuid4().hex[:6]
    secret = "Zq9-" + uuid.uuid4().hex[:8]
    conn = pg.primary.connect(user="app_user", dbname="appdb", application_name=app)
    conn.execute(f"SELECT '{secret}' AS \"KeptName\", 4242 /* {secret} */")  # test literal
    config = {"environments": {
        "red": env_config(pg, redact_queries=True),
        "plain": env_config(pg),
    }}
    try:
        with BotUnderTest(config, fake_slack) as bot:
            shown = bot.listing(f"red --app {app} --min 0s")
            text = json.dumps(shown)
            assert secret not in text and "4242" not in text
            assert 'SELECT ? AS \\"KeptName\\", ? /* ? */' in text or "SELECT ? AS" in text
            with bot.rt.store.engine.connect() as c:
                payloads = [r[0] for r in c.execute(select(targets.c.payload).where(targets.c.env == "red"))]
            assert payloads and all(secret not in p for p in payloads)
            assert any("SELECT ? AS" in p for p in payloads)
            # control: without redact_queries the same session shows its literal
            plain = bot.listing(f"plain --app {app} --min 0s")
            assert secret in json.dumps(plain)
    finally:
        conn.close()


def test_a_client_with_standard_conforming_strings_off_cannot_show_its_password(pg, fake_slack, caplog):
    """Reproduction of issue 12 §5: SET standard_conforming_strings = off; SELECT 'pa\\'ss...' was listed with
    the password in it. Now the text is hidden, in Slack, the stored button snapshots and the logs."""
    import json
    import uuid

    from sqlalchemy import select

    from bot.state.store import audit, targets
    from tests.harness.bot import BotUnderTest, env_config

    app = "scs-off-" + uuid.uuid4().hex[:6]
    secret = "Pw" + uuid.uuid4().hex[:10]
    conn = pg.primary.connect(user="app_user", dbname="appdb", application_name=app, autocommit=True)
    try:
        conn.execute("SET standard_conforming_strings = off")
        conn.execute("SET escape_string_warning = off")
        sql = f"SELECT 'pa\\'ss {secret}' AS x, 'qztail {secret}' AS y"  # the attacker's text
        assert conn.execute(sql).fetchone() == (f"pa'ss {secret}", f"qztail {secret}")
        seen = pg.primary.sql("SELECT query FROM pg_stat_activity WHERE application_name = %s", (app,))[0][0]
        assert secret in seen and redact(seen) == UNREDACTABLE
        config = {"environments": {"red": env_config(pg, redact_queries=True)}}
        with BotUnderTest(config, fake_slack) as bot:
            shown = bot.listing(f"red --app {app} --min 0s")
            text = json.dumps(shown)
            assert app in text, text
            assert secret not in text and "pa\\\\'ss" not in text and "qztail" not in text
            assert UNREDACTABLE in text
            with bot.rt.store.engine.connect() as c:
                payloads = [r[0] for r in c.execute(select(targets.c.payload).where(targets.c.env == "red"))]
                audited = [str(r) for r in c.execute(select(audit))]
            assert payloads and all(secret not in p for p in payloads)
            assert any(UNREDACTABLE in p for p in payloads)
            assert all(secret not in a for a in audited)
        assert secret not in caplog.text
    finally:
        conn.close()


# --- issue 23 §10: bare-word setting values; texts stored before redact_queries was on ----------------


@pytest.mark.unit
@pytest.mark.parametrize("sql, expected", [
    ("SET app.token = secret10", "SET app.token = ?"),
    ("set local app.token to secret10", "set local app.token to ?"),
    ("SET SESSION x = on", "SET SESSION x = ?"),
    ("ALTER ROLE bob SET app.key = word", "ALTER ROLE bob SET app.key = ?"),
    ("ALTER ROLE bob IN DATABASE d SET search_path = a, \"B\"; SELECT 1", "ALTER ROLE bob IN DATABASE d SET search_path = ?, ?; SELECT ?"),
    ("ALTER DATABASE d SET app.key TO word", "ALTER DATABASE d SET app.key TO ?"),
    ("ALTER SYSTEM SET x = word", "ALTER SYSTEM SET x = ?"),
    ("SET TIME ZONE Europe", "SET TIME ZONE ?"),
    ("SET x = secret -- note", "SET x = ? -- ?"),
    # not settings: column assignments and table options keep their names
    ("UPDATE t SET a = b WHERE c = 1", "UPDATE t SET a = b WHERE c = ?"),
    ("INSERT INTO t VALUES (1) ON CONFLICT (a) DO UPDATE SET b = excluded.b", "INSERT INTO t VALUES (?) ON CONFLICT (a) DO UPDATE SET b = excluded.b"),
    ("ALTER TABLE t ALTER COLUMN c SET DEFAULT 5", "ALTER TABLE t ALTER COLUMN c SET DEFAULT ?"),
    ("ALTER TABLE t SET (fillfactor = 70)", "ALTER TABLE t SET (fillfactor = ?)"),
    ("SET ROLE app_owner", "SET ROLE app_owner"),
])
def test_bare_word_setting_values_are_redacted(sql, expected):
    assert redact(sql) == expected
    assert redact(expected) == expected  # idempotent: safe to redact again when shown


@pytest.mark.unit
def test_a_stored_request_is_redacted_when_shown():
    from bot.approval.models import (
        BulkTarget,
        Request,
        RequestState,
        SessionRef,
        SessionTarget,
        with_queries_redacted,
    )

    base = dict(id="r1", env="prod", host="primary", action="terminate", requester="U1", state=RequestState.PENDING,
                created_at=1.0, expires_at=2.0, updated_at=1.0)
    req = Request(target=SessionTarget(pid=1, query="SET app.token = secret10; SELECT 'Zq9'"), **base)
    shown = with_queries_redacted(req)
    assert shown.session is not None and shown.session.query == "SET app.token = ?; SELECT ?"
    bulk = Request(target=BulkTarget(sessions=(SessionRef(pid=1, query="SELECT 'Zq9'"), SessionRef(pid=2))),
                   **{**base, "action": "terminate_bulk"})
    assert [s.query for s in with_queries_redacted(bulk).sessions] == ["SELECT ?", None]


@pytest.mark.unit
def test_the_audit_export_redacts_texts_of_redacted_environments():
    from bot.audit_export import record

    row = {"at": 1.7e9, "env": "red", "event": "terminate:requested", "query": "SET app.token = secret10"}
    assert record(row, {"red"})["query"] == "SET app.token = ?"
    assert record(row, {"other"})["query"] == "SET app.token = secret10"


def test_a_request_stored_before_redact_queries_was_on_is_shown_redacted(pg, fake_slack, tmp_path):
    """A request made while redact_queries was off, then the bot restarted with it on: its message redrawn,
    the Home tab and ``pgsessions audit`` show no literal."""
    import json
    import os
    import subprocess
    import sys
    import uuid

    import yaml

    from tests.harness.bot import BotUnderTest, env_config
    from tests.harness.flows import click, request_kill, wait_state
    from tests.harness.waiting import wait_until

    app = "redact-late-" + uuid.uuid4().hex[:6]
    secret = "Zq9" + uuid.uuid4().hex[:8]
    conn = pg.primary.connect(user="app_user", dbname="appdb", application_name=app)
    fake_slack.usergroups = {"S0DBAS": ["U7"]}
    state = f"sqlite:///{tmp_path / 'state.db'}"
    try:
        conn.execute(f"SELECT '{secret}' AS x")
        pid = conn.info.backend_pid
        with BotUnderTest({"environments": {"test": env_config(pg)}}, fake_slack, state=state) as bot:
            msg = request_kill(bot, "test", app, pid, "Terminate", user="U1")
            assert secret in json.dumps(fake_slack.messages[(msg.channel, msg.ts)].blocks)  # control: off shows it
        config = {"environments": {"test": env_config(pg, redact_queries=True)}}
        with BotUnderTest(config, fake_slack, state=state) as bot:
            click(bot, msg, "Deny", "U7")
            denied = wait_state(bot, msg, "Denied")
            assert secret not in json.dumps(denied.blocks) + denied.text
            assert "SELECT ? AS x" in json.dumps(denied.blocks)
            bot.slack.app_home_opened("U1")
            home = wait_until(lambda: fake_slack.home_views.get("U1"), 10, "the Home tab")
            assert secret not in json.dumps(home.view)
            path = tmp_path / "pgsessions.yml"
            path.write_text(yaml.safe_dump(bot.config_dict))
            env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "PGSESSIONS_"))}
            out = subprocess.run([sys.executable, "-m", "bot.cli", "audit", "--config", str(path)],
                                 capture_output=True, text=True, timeout=60, env=env)
            assert out.returncode == 0, out.stderr
            records = [json.loads(line) for line in out.stdout.splitlines()]
            assert any(r["query"] == "SELECT ? AS x" for r in records), records
            assert secret not in out.stdout
        fake_slack.assert_clean()
    finally:
        conn.close()
