"""Which statement file serves which server version, which versions are refused and in what words (no
server needed: the version suite, ``make test-versions``, runs the statements on 13-18)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from importlib import resources

import pytest

from bot.check import FAIL, OK, HostReport, SlackReport, StateReport, render_text
from bot.lagwatch.model import Unreachable
from bot.postgres import sql as botsql
from bot.postgres.pools import DatabaseUnavailable, UnsupportedServer
from bot.render.errors import unavailable
from bot.render.lag import render_lag_listing

pytestmark = pytest.mark.unit


def test_servers_older_than_13_are_refused_in_the_words_of_the_issue():
    assert botsql.unsupported(120022, "12.22 (Debian 12.22-1.pgdg120+1)") == \
        "PostgreSQL 12.22 is not supported (13 or newer)"
    assert botsql.unsupported(129999, "12.9999") == "PostgreSQL 12.9999 is not supported (13 or newer)"
    assert botsql.unsupported(90624) == "PostgreSQL 9.6.24 is not supported (13 or newer)"
    assert botsql.unsupported(110000, "11beta1") == "PostgreSQL 11beta1 is not supported (13 or newer)"
    for ok in (130000, 130023, 140000, 150020, 160014, 170010, 180006, 190000):
        assert botsql.unsupported(ok) is None, ok


def test_a_refused_server_is_never_called_unavailable_or_unreachable():
    exc = UnsupportedServer("prod", "primary", botsql.unsupported(120022, "12.22"))
    assert isinstance(exc, DatabaseUnavailable)  # every handler that answers for a failed read answers for it
    assert unavailable(exc) == "`prod` (primary): PostgreSQL 12.22 is not supported (13 or newer)"
    assert str(exc) == exc.plain == "prod (primary): PostgreSQL 12.22 is not supported (13 or newer)"
    standby = UnsupportedServer("prod", "replica1", botsql.unsupported(120022, "12.22"))
    assert unavailable(standby) == "`prod` standby `replica1`: PostgreSQL 12.22 is not supported (13 or newer)"
    for text in (unavailable(exc), exc.plain, unavailable(standby)):
        assert "unavailable" not in text and "unreachable" not in text.lower()


def test_the_lag_command_says_not_supported_not_unreachable():
    at = datetime(2026, 1, 1, tzinfo=UTC)
    results = [Unreachable("prod", "old", "PostgreSQL 12.22 is not supported (13 or newer)", at, unsupported=True),
               Unreachable("prod", "gone", "connection refused", at)]
    msg = render_lag_listing("prod", results)
    text = str(msg)
    assert "*old*: PostgreSQL 12.22 is not supported (13 or newer)" in text
    assert "old: not supported" in text and "old* unreachable" not in text
    assert "*gone* unreachable: connection refused" in text


def test_each_statement_file_is_picked_by_server_version_num():
    assert botsql.overrides() == {name: (140000,) for name in (
        "details_locks", "details_session", "lock_forest", "sessions", "signal_terminate", "watch_host")}
    for name in botsql.overrides():
        assert botsql.filename(name, 130023) == f"{name}.pre140000.sql"
        assert botsql.filename(name, 139999) == f"{name}.pre140000.sql"
        for newer in (140000, 150020, 180006):
            assert botsql.filename(name, newer) == f"{name}.sql"
        assert botsql.filename(name) == f"{name}.sql"
    assert botsql.filename("server_info", 130000) == "server_info.sql"
    with pytest.raises(KeyError):
        botsql.query("no_such_statement")


def test_the_pg13_files_use_nothing_that_came_in_14_and_differ_only_where_13_lacks_it():
    def code(name: str, version: int | None = None) -> str:  # the statement without its comments
        return re.sub(r"--[^\n]*", "", botsql.query(name, version))

    for name in ("lock_forest", "sessions", "watch_host", "details_locks"):
        assert "waitstart" in code(name) and "waitstart" not in code(name, 130000), name
    assert "a.query_id" in code("details_session") and "a.query_id" not in code("details_session", 130000)
    assert re.search(r"pg_terminate_backend\(c\.pid, %\(timeout_ms\)s\)", code("signal_terminate"))
    assert "pg_terminate_backend(c.pid)" in code("signal_terminate", 130000)
    # the same statement otherwise: the same columns, in the same order, and no other parameter
    for name in botsql.overrides():
        new, old = code(name), code(name, 130000)
        assert set(re.findall(r"%\((\w+)\)s", old)) <= set(re.findall(r"%\((\w+)\)s", new)), name
        # (13's query_id is a NULL named like the column it stands for)
        assert _output_columns(new) == [c for c in _output_columns(old) if (name, c) != ("details_session", "query_id")]


def _output_columns(text: str) -> list[str]:
    """The names after AS in the last SELECT list (what the Python reads)."""
    last = text[text.rindex("\nSELECT "):]
    select_list = last.split("\n  FROM ")[0]
    return re.findall(r"\bAS (\w+)", select_list)


def test_every_override_file_has_a_base_file():
    names = {f.name for f in resources.files("bot.postgres").joinpath("queries").iterdir()}
    for name in names:
        if ".pre" in name:
            assert re.fullmatch(r"[a-z0-9_]+\.pre\d{6}\.sql", name), name
            assert name.split(".pre")[0] + ".sql" in names, name


@pytest.mark.parametrize(("num", "have"), [
    (130023, set()),
    (140000, {"lock wait start", "query_id", "terminate with timeout"}),
    (150020, {"lock wait start", "query_id", "terminate with timeout"}),
    (160014, {"lock wait start", "query_id", "terminate with timeout", "reserved connections"}),
    (170010, {"lock wait start", "query_id", "terminate with timeout", "reserved connections"}),
    (180006, {"lock wait start", "query_id", "terminate with timeout", "reserved connections",
              "pg_signal_autovacuum_worker"}),
])
def test_what_each_version_enables(num, have):
    f = botsql.features(num)
    assert {name for name, present, _, _ in f.described() if present} == have
    text = f.enabled()
    assert text.startswith("enables ")
    for name, present, since, _ in f.described():
        assert (f"{name} ({since}+)" in text) == (not present)


def test_check_lists_each_servers_version_and_what_it_enables():
    new = HostReport(env="prod", host="primary", server_version="16.14", server_version_num=160014,
                     features={name: present for name, present, _, _ in botsql.features(160014).described()})
    new.add(OK, "version", "PostgreSQL 16.14")
    old = HostReport(env="prod", host="replica1", role="standby", server_version="13.23", server_version_num=130023,
                     features={name: present for name, present, _, _ in botsql.features(130023).described()})
    old.add(OK, "version", "PostgreSQL 13.23")
    refused = HostReport(env="legacy", host="primary", server_version="12.22", server_version_num=120022)
    refused.add(FAIL, "version", "PostgreSQL 12.22 is not supported (13 or newer): the bot does not use this server")
    text = render_text("x.yml", [new, old, refused], StateReport(), SlackReport(), [], strict=False)
    lines = text.split("\n")
    assert "Versions:" in lines
    assert ("  prod/primary: PostgreSQL 16.14: enables lock wait start, query_id, terminate with timeout, "
            "reserved connections; not pg_signal_autovacuum_worker (18+)") in lines
    assert ("  prod/replica1: PostgreSQL 13.23: enables none of the newer features; not lock wait start (14+), "
            "query_id (14+), terminate with timeout (14+), reserved connections (16+), "
            "pg_signal_autovacuum_worker (18+)") in lines
    assert "  legacy/primary: PostgreSQL 12.22: not supported (13 or newer)" in lines
    assert any("legacy/primary: version: PostgreSQL 12.22 is not supported (13 or newer)" in line for line in lines)
    assert "unreachable" not in text
