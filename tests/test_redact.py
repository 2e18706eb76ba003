"""Literal redaction with PostgreSQL's own lexer (bot/postgres/redact.py)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
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
    assert out.endswith("AS v FROM t WHERE k = ?")


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
    conn.execute(f"SELECT '{secret}' AS \"KeptName\", 4242 /* {secret} */")  # noqa: S608 - test literal
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
