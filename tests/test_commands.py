"""The command parser (text after ``/pgsessions``): every form and every error with its message. Pure."""

from __future__ import annotations

import pytest

from bot.commands import (
    USAGE,
    Audit,
    ClearDb,
    CommandError,
    Help,
    ListSessions,
    Pending,
    ShowLag,
    parse,
)
from bot.config import parse_config
from bot.postgres.models import Filters

pytestmark = pytest.mark.unit

CONFIG = parse_config(
    {
        "environments": {
            "prod": {"dsn": "host=db1 dbname=postgres", "standbys": {"replica1": "host=db2", "replica2": "host=db3"}},
            "stage": {"dsn": "host=db9 dbname=postgres"},
        }
    },
    {},
)


def error(text: str) -> CommandError:
    with pytest.raises(CommandError) as info:
        parse(text, CONFIG)
    return info.value


# --- forms -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "   ", "help", "HELP", "-h", "--help", "?", "help me please"])
def test_help(text):
    assert parse(text, CONFIG) == Help()


def test_none_is_help():
    assert parse(None, CONFIG) == Help()  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["pending", "Pending", "PENDING"])
def test_pending(text):
    assert parse(text, CONFIG) == Pending()


def test_audit_with_and_without_environment():
    assert parse("audit", CONFIG) == Audit(None)
    assert parse("AUDIT stage", CONFIG) == Audit("stage")
    assert parse("audit prod", CONFIG).limit == 15


def test_listing_of_the_primary_without_filters():
    assert parse("prod", CONFIG) == ListSessions("prod", "primary", Filters())
    assert parse("prod primary", CONFIG) == ListSessions("prod", "primary", Filters())


def test_listing_of_a_standby_with_filters():
    cmd = parse("prod replica2 blocked --min 1m", CONFIG)
    assert cmd == ListSessions("prod", "replica2", Filters(categories=frozenset({"blocked"}), min_seconds=60.0))


def test_categories_combine_and_ignore_case():
    cmd = parse("prod active IDLE-TX idle blocked active", CONFIG)
    assert cmd.filters.categories == frozenset({"active", "idle-tx", "idle", "blocked"})


def test_value_filters():
    cmd = parse("stage --min 10m --app billing --user alice --db orders", CONFIG)
    assert cmd == ListSessions(
        "stage", "primary", Filters(min_seconds=600.0, app="billing", user="alice", database="orders")
    )


def test_older_is_min_and_equals_form_works():
    assert parse("prod --older 90s", CONFIG).filters.min_seconds == 90.0
    cmd = parse("prod --min=1h30m --app=web --user=bob --db=shop", CONFIG)
    assert cmd.filters == Filters(min_seconds=5400.0, app="web", user="bob", database="shop")


def test_bare_number_is_seconds():
    assert parse("prod --min 45", CONFIG).filters.min_seconds == 45.0


def test_quoted_values_keep_their_spaces_and_slack_quotes_and_dashes_are_undone():
    assert parse('prod --app "my app"', CONFIG).filters.app == "my app"
    assert parse("prod --app 'my app'", CONFIG).filters.app == "my app"
    # Slack turns typed quotes into curly ones and "--" into an em or en dash
    assert parse("prod --app \u201cmy app\u201d", CONFIG).filters.app == "my app"
    assert parse("prod --app \u2018my app\u2019", CONFIG).filters.app == "my app"
    assert parse("prod \u2014min 10m", CONFIG).filters.min_seconds == 600.0
    assert parse("prod \u2013user carol", CONFIG).filters.user == "carol"


def test_idle_app_form_for_bulk():
    cmd = parse("prod idle --app worker --older 10m --user svc", CONFIG)
    assert cmd == ListSessions(
        "prod", "primary",
        Filters(categories=frozenset({"idle"}), min_seconds=600.0, app="worker", user="svc"),
    )


def test_lag():
    assert parse("prod lag", CONFIG) == ShowLag("prod")


def test_clear_db():
    assert parse("prod clear-db orders", CONFIG) == ClearDb("prod", "orders", "primary")


# --- errors ----------------------------------------------------------------------------------------


def test_unknown_environment_lists_the_known_ones_without_usage():
    e = error("qa")
    assert e.message == "Unknown environment `qa`. Known environments: `prod`, `stage`."
    assert not e.show_usage
    assert e.answer() == e.message


def test_unknown_environment_in_audit():
    e = error("audit qa")
    assert e.message == "Unknown environment `qa`. Known environments: `prod`, `stage`."
    assert not e.show_usage


def test_environment_names_match_ignoring_case_when_unambiguous():
    assert parse("PROD", CONFIG).env == "prod"
    both = parse_config({"environments": {"prod": {"dsn": "host=a"}, "Prod": {"dsn": "host=b"}}}, {})
    assert parse("Prod", both).env == "Prod"  # an exact match wins
    with pytest.raises(CommandError) as info:
        parse("PROD", both)  # two environments match ignoring case: none is guessed
    assert info.value.message.startswith("Unknown environment `PROD`.")


def test_pending_takes_no_arguments():
    e = error("pending prod now")
    assert e.message == "`pending` takes no arguments (got `prod now`)."
    # one usage line, the one that applies, not the whole help
    assert e.show_usage and e.answer() == f"{e.message}\nUsage: `/pgsessions pending` · `/pgsessions help` for the rest."


def test_audit_takes_one_environment():
    e = error("audit prod stage")
    assert e.message == "`audit` does not know `stage`."
    assert e.show_usage and "`/pgsessions audit" in e.answer() and USAGE not in e.answer()


def test_lag_takes_no_more_words():
    assert error("prod lag replica1").message == "`prod lag` takes no more words (got `replica1`)."


@pytest.mark.parametrize("text", ["prod clear-db", "prod clear-db a b"])
def test_clear_db_needs_exactly_one_database(text):
    assert error(text).message == "Write `/pgsessions prod clear-db DBNAME` with exactly one database name."


def test_unknown_standby_lists_the_standbys():
    e = error("prod replica3")
    assert e.message == "`prod` has no standby or filter called `replica3`. Standbys of `prod`: `replica1`, `replica2`."
    assert e.show_usage and USAGE not in e.answer()
    assert e.answer().endswith("`/pgsessions help` for the rest.") and e.answer().count("\n") == 1


def test_unknown_word_on_an_environment_without_standbys():
    assert error("stage replica1").message == (
        "`stage` has no standby or filter called `replica1`. Standbys of `stage`: none configured."
    )


@pytest.mark.parametrize("text, flag", [("prod --bogus", "--bogus"), ("prod -x", "-x"),
                                        ("prod replica1 active sleepy", "sleepy")])
def test_unknown_filter(text, flag):
    assert error(text).message == f"I don't know the filter `{flag}`."


@pytest.mark.parametrize(
    "text, hint",
    [
        ("prod --min", "`--min` needs a value, e.g. `--min 10m`."),
        ("prod --older", "`--older` needs a value, e.g. `--older 10m`."),
        ("prod --app", "`--app` needs a value, e.g. `--app NAME`."),
        ("prod --user --db x", "`--user` needs a value, e.g. `--user NAME`."),
        ("prod --db", "`--db` needs a value, e.g. `--db NAME`."),
    ],
)
def test_flag_without_a_value(text, hint):
    assert error(text).message == hint


@pytest.mark.parametrize("text, flag", [("prod --app a --app b", "--app"), ("prod --min 1m --older 2m", "--older"),
                                        ("prod --db=a --db b", "--db")])
def test_flag_given_twice(text, flag):
    assert error(text).message == f"`{flag}` is given twice: give it once."


@pytest.mark.parametrize("value", ["5x", "ten", "-5m", "1h-"])
def test_bad_duration_says_how_to_write_one(value):
    assert error(f"prod --min {value}").message == (
        f"`{value}` is not a duration: write it like `90s`, `10m`, `1h` or plain seconds."
    )


@pytest.mark.parametrize("text", ['prod --app "unclosed', "prod --app 'x", "prod --app \u201cx"])
def test_unclosed_quote(text):
    e = error(text)
    assert e.message == "I could not read that: a quote is not closed."
    assert e.show_usage


def test_usage_names_every_command():
    for form in ("/pgsessions <env>", "<standby>", "lag", "clear-db DBNAME", "pending", "audit <env>", "help",
                 "--min 10m", "--app NAME", "--user NAME", "--db NAME", "idle-tx", "blocked"):
        assert form in USAGE, form
