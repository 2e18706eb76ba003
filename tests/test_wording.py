"""Every word a user reads is right (issue 17): durations, command errors, environment names."""

from __future__ import annotations

import pytest

from bot.commands import USAGE, Audit, CommandError, ListSessions, parse
from bot.config import Config
from bot.durations import DurationError, format_duration, parse_duration

pytestmark = pytest.mark.unit


def config(*names: str) -> Config:
    envs = {n: {"dsn": "host=127.0.0.1 dbname=postgres", "standbys": {"replica1": "host=127.0.0.1"}} for n in names}
    return Config.model_validate({"environments": envs})


@pytest.mark.parametrize("secs, text", [
    (0, "0s"), (45, "45s"), (600, "10m"), (605, "10m 05s"), (3600, "1h"), (3720, "1h 02m"),
    (3 * 86400, "3d"), (3 * 86400 + 7200, "3d 2h"), (None, "–"),
])
def test_durations_read_without_zero_parts(secs, text):
    assert format_duration(secs) == text


@pytest.mark.parametrize("typed", ["99999999999999h", "367d", "9" * 400 + "s"])
def test_absurd_durations_are_refused_with_the_limit(typed):
    with pytest.raises(DurationError, match="at most 366d"):
        parse_duration(typed)
    assert parse_duration("366d") == 366 * 86400


def test_min_too_long_says_the_limit_once():
    with pytest.raises(CommandError) as err:
        parse("prod --min 99999999999999h", config("prod"))
    answer = err.value.answer()
    assert "at most 366d" in answer and "not a duration" not in answer


def test_an_error_shows_the_one_usage_line_that_applies():
    with pytest.raises(CommandError) as err:
        parse("prod --frobnicate", config("prod"))
    answer = err.value.answer()
    assert "I don't know the filter `--frobnicate`" in answer
    assert "Usage: `/pgsessions <env> [<standby>]" in answer and "`/pgsessions help` for the rest" in answer
    assert USAGE not in answer and len(answer.splitlines()) == 2
    with pytest.raises(CommandError) as err:
        parse("prod lag now", config("prod"))
    assert "Usage: `/pgsessions <env> lag`" in err.value.answer()


def test_environment_names_match_case_insensitively_when_unambiguous():
    cmd = parse("PROD replica1", config("prod", "staging"))
    assert cmd == ListSessions("prod", "replica1", cmd.filters)
    assert parse("audit Staging", config("prod", "staging")) == Audit("staging")
    # two environments that differ only in case: only the exact name is taken
    both = config("prod", "Prod")
    assert parse("Prod", both).env == "Prod"
    with pytest.raises(CommandError, match="Unknown environment `PROD`"):
        parse("PROD", both)


def test_audit_options():
    cfg = config("prod")
    assert parse("audit prod --since 1h --user <@U0123ABC|alice> --page 3", cfg) == Audit(
        "prod", since=3600.0, actor="U0123ABC", page=3
    )
    assert parse("audit --user=U0999XYZ", cfg) == Audit(None, actor="U0999XYZ")
    named = Config.model_validate({**config("prod").model_dump(), "users": {"bob": "U0BOB"}})
    assert parse("audit --user @Bob", named) == Audit(None, actor="U0BOB")  # should_escape is off: "@bob" as typed
    for bad, why in [("audit --page 0", "page number"), ("audit --user alice", "member ID"),
                     ("audit --since soon", "not a duration"), ("audit prod prod", "does not know")]:
        with pytest.raises(CommandError, match=why):
            parse(bad, cfg)


def test_audit_says_how_many_more_and_how_to_see_them():
    import json

    from bot.render.approval import audit_list

    entries = [{"at": 100.0, "env": "prod", "event": "terminate:ended", "pid": i, "actor": None, "result": None}
               for i in range(15)]
    body = json.dumps(audit_list(entries, "prod", more=8, next_page="/pgsessions audit prod --page 2"))
    assert "8 older entries not shown" in body and "`/pgsessions audit prod --page 2` shows the next ones" in body
    assert "--since" in body and "--user" in body
    assert "older entr" not in json.dumps(audit_list(entries, "prod"))
    assert "no entries yet" in json.dumps(audit_list([], "prod", next_page="/pgsessions audit prod --page 2"))
    assert "no entries match" in json.dumps(audit_list([], "prod", filtered=True))


def test_readme_documents_the_terminal_chats_builtin_thresholds_and_users():
    from pathlib import Path

    from bot.shell.localconfig import builtin_config

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    t = builtin_config(dsn="dbname=postgres").environments["local"].thresholds
    section = readme.split("That built-in configuration has thresholds", 1)[1].split("\n\n", 1)[0]
    assert f"long-running after **{format_duration(t.long_running)}**" in section
    assert f"idle in transaction\nafter **{format_duration(t.idle_in_transaction)}**" in section or \
        f"idle in transaction after **{format_duration(t.idle_in_transaction)}**" in section
    assert f"idle one after **{format_duration(t.idle)}**" in section
    assert "| `users` |" in readme
    assert "OS user's role" in readme and "superuser" in readme
