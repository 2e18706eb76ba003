"""Every config validator: its error names the key (as a path into the file) and says how to fix it. Pure."""

from __future__ import annotations

import pytest

from bot.config import ConfigError, load_config, parse_config
from bot.durations import DURATION_HINT

pytestmark = pytest.mark.unit

DSN = "host=db1 dbname=postgres user=pgsessions_bot"
STANDBY = {"standbys": {"replica1": "host=db2 dbname=postgres"}}
PRINCIPAL_FIX = (
    "is not a Slack user id (U…/W…), user-group id (S…) or \"*\": copy the id from the person's or group's "
    "profile in Slack"
)
DSN_FIX = (
    "not a valid connection string: write it as 'host=db1 dbname=postgres user=pgsessions_bot' "
    "or 'postgresql://pgsessions_bot@db1/postgres'"
)


def error_of(data, environ=None) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data, environ or {})
    return str(info.value)


def env_error(**values) -> str:
    return error_of({"environments": {"prod": {"dsn": DSN, **values}}})


# --- the bot's own validators: the whole message ------------------------------------------------------


@pytest.mark.parametrize(
    "values, message",
    [
        ({"timeouts": {"connect": "0.5s"}},
         "environments.prod.timeouts.connect: connect timeout must be at least 1s "
         "(libpq rounds smaller values up to 2s)"),
        ({"timeouts": {"statement": 0}},
         "environments.prod.timeouts.statement: statement timeout must be more than 0s: "
         "an unbounded query can hang the bot"),
        ({"access": {"requesters": ["bob"]}}, f"environments.prod.access.requesters: 'bob' {PRINCIPAL_FIX}"),
        ({"access": {"approvers": "alice"}}, f"environments.prod.access.approvers: 'alice' {PRINCIPAL_FIX}"),
        ({"access": {"approvers": ["S0DBAS", "@dba"]}}, f"environments.prod.access.approvers: '@dba' {PRINCIPAL_FIX}"),
        ({"access": {"request_ttl": "10s"}},
         "environments.prod.access.request_ttl: request_ttl must be at least 30s so that an approver has time to answer"),
        ({**STANDBY, "lag_alert": {"channel": "C1", "check_every": "0.5s"}},
         "environments.prod.lag_alert.check_every: check_every must be at least 1s"),
        ({"standbys": {"bad name": "host=x"}},
         "environments.prod.standbys: standby name 'bad name' must be letters, digits, '.', '_' or '-'"),
        ({"standbys": {"Lag": "host=x"}},
         "environments.prod.standbys: standby name 'Lag' is a command word: rename it (e.g. Lag1)"),
        ({"standbys": {"r1": "host=x password='s3cret"}}, f"environments.prod.standbys: standby 'r1': {DSN_FIX}"),
        ({"dsn": "host=db1 password='s3cret"}, f"environments.prod.dsn: {DSN_FIX}"),
    ],
)
def test_environment_validators(values, message):
    msg = env_error(**values)
    assert msg == message
    assert "s3cret" not in msg


@pytest.mark.parametrize("word", ["primary", "active", "idle", "idle-tx", "blocked", "lag", "clear-db", "audit", "all",
                                  "help"])
def test_every_command_word_is_refused_as_a_standby_name(word):
    assert env_error(standbys={word: "host=x"}) == (
        f"environments.prod.standbys: standby name '{word}' is a command word: rename it (e.g. {word}1)"
    )


@pytest.mark.parametrize("word", ["help", "audit", "pending", "version", "Pending"])
def test_every_command_word_is_refused_as_an_environment_name(word):
    assert error_of({"environments": {word: {"dsn": DSN}}}) == (
        f"environments: environment name '{word}' is a command word: rename it (e.g. {word}1)"
    )


def test_environment_name_characters():
    assert error_of({"environments": {"prod db": {"dsn": DSN}}}) == (
        "environments: environment name 'prod db' must be letters, digits, '.', '_' or '-'"
    )


def test_no_environment():
    assert error_of({"environments": {}}) == (
        "environments: no environment configured: add one under 'environments:' with at least a dsn"
    )


def test_state_url():
    assert error_of({"environments": {"prod": {"dsn": DSN}}, "state": "mysql://x"}) == (
        "state: state must be 'sqlite:///path/to/file.db' or 'postgresql://user@host/db'"
    )


def test_lag_alert_without_standbys_names_the_keys_to_change():
    msg = error_of({"environments": {"stage": {"dsn": DSN, "lag_alert": {"channel": "C1"}}}})
    assert msg.endswith(
        "environments.stage.lag_alert is set but the environment has no standbys: "
        "add environments.stage.standbys or remove lag_alert"
    )
    assert "{name}" not in msg


# --- pydantic's checks on bounds and types: the key and the bound ---------------------------------------


@pytest.mark.parametrize(
    "values, key, bound",
    [
        ({"access": {"approvals_required": 0}}, "access.approvals_required", "greater than or equal to 1"),
        ({"access": {"approvals_required": 11}}, "access.approvals_required", "less than or equal to 10"),
        ({"access": {"max_bulk": 0}}, "access.max_bulk", "greater than or equal to 1"),
        ({"access": {"max_bulk": 10001}}, "access.max_bulk", "less than or equal to 10000"),
        ({**STANDBY, "lag_alert": {"channel": "C1", "consecutive": 0}}, "lag_alert.consecutive",
         "greater than or equal to 1"),
        ({**STANDBY, "lag_alert": {"channel": "C1", "consecutive": 101}}, "lag_alert.consecutive",
         "less than or equal to 100"),
        ({**STANDBY, "lag_alert": {"channel": "C1", "min_bytes": -1}}, "lag_alert.min_bytes",
         "greater than or equal to 0"),
        ({"listing": {"max_sessions": 0}}, "listing.max_sessions", "greater than or equal to 1"),
        ({"listing": {"max_sessions": 23}}, "listing.max_sessions", "less than or equal to 22"),
        ({"listing": {"query_chars": 39}}, "listing.query_chars", "greater than or equal to 40"),
        ({"listing": {"query_chars": 1501}}, "listing.query_chars", "less than or equal to 1500"),
        ({"access": {"self_approval": "maybe"}}, "access.self_approval", "valid boolean"),
        ({"redact_queries": "perhaps"}, "redact_queries", "valid boolean"),
        ({"clear_db": {"allow": "orders"}}, "clear_db.allow", "valid list"),
        ({**STANDBY, "lag_alert": {"threshold": "5s"}}, "lag_alert.channel", "required but missing: add it to the file"),
    ],
)
def test_bounds_and_types_name_the_key(values, key, bound):
    msg = env_error(**values)
    assert msg.startswith(f"environments.prod.{key}: ")
    assert bound in msg


@pytest.mark.parametrize(
    "values, key",
    [
        ({"thresholds": {"long_running": "5 mins"}}, "thresholds.long_running"),
        ({"thresholds": {"idle_in_transaction": "x"}}, "thresholds.idle_in_transaction"),
        ({"thresholds": {"idle": True}}, "thresholds.idle"),
        ({"timeouts": {"connect": "soon"}}, "timeouts.connect"),
        ({"timeouts": {"statement": "1h-"}}, "timeouts.statement"),
        ({"access": {"request_ttl": "15 min"}}, "access.request_ttl"),
        ({**STANDBY, "lag_alert": {"channel": "C1", "threshold": "30 sec"}}, "lag_alert.threshold"),
        ({**STANDBY, "lag_alert": {"channel": "C1", "check_every": "often"}}, "lag_alert.check_every"),
        ({**STANDBY, "lag_alert": {"channel": "C1", "remind_every": "daily"}}, "lag_alert.remind_every"),
    ],
)
def test_every_duration_key_says_how_to_write_a_duration(values, key):
    msg = env_error(**values)
    assert msg.startswith(f"environments.prod.{key}: ")
    assert "is not a duration" in msg and DURATION_HINT in msg


def test_negative_duration():
    msg = env_error(thresholds={"idle": -5})
    assert msg == f"environments.prod.thresholds.idle: -5 is negative: durations must be zero or more ({DURATION_HINT})"


def test_several_errors_are_all_reported_one_per_line():
    lines = env_error(timeouts={"connect": 0}, access={"request_ttl": 1}, listing={"max_sessions": 99}).splitlines()
    assert sorted(line.split(": ", 1)[0] for line in lines) == [
        "environments.prod.access.request_ttl",
        "environments.prod.listing.max_sessions",
        "environments.prod.timeouts.connect",
    ]


# --- unknown and missing keys, variables, files -----------------------------------------------------------


@pytest.mark.parametrize(
    "data, message",
    [
        ({"environments": {"prod": {"dsn": DSN}}, "stat": "x"}, "stat: unknown key: did you mean 'state'?"),
        ({"environments": {"prod": {"dsn": DSN, "acess": {}}}}, "environments.prod.acess: unknown key: did you mean 'access'?"),
        ({"environments": {"prod": {"dsn": DSN, "access": {"aprovers": []}}}},
         "environments.prod.access.aprovers: unknown key: did you mean 'approvers'?"),
        ({"environments": {"prod": {"dsn": DSN, "listing": {"max_sesions": 5}}}},
         "environments.prod.listing.max_sesions: unknown key: did you mean 'max_sessions'?"),
    ],
)
def test_unknown_key_suggests_the_right_one(data, message):
    assert error_of(data) == message


def test_unknown_key_far_from_every_known_one_lists_them():
    msg = error_of({"environments": {"prod": {"dsn": DSN, "timeouts": {"zzzzzz": 1}}}})
    assert msg == "environments.prod.timeouts.zzzzzz: unknown key: known keys here: connect, statement"


def test_missing_variable_inside_a_list_names_its_position():
    msg = error_of({"environments": {"prod": {"dsn": DSN, "access": {"approvers": ["S0DBAS", "${APPROVER}"]}}}})
    assert msg == (
        "environments.prod.access.approvers[1]: environment variable APPROVER is not set: export APPROVER=... "
        "before starting the bot, or write ${APPROVER:-default} to give a default"
    )


def test_not_a_mapping():
    for data in ([1, 2], "environments", 5):
        assert error_of(data) == "the config file must be a YAML mapping with at least 'environments:'"


def test_yaml_error_gives_line_and_column(tmp_path):
    path = tmp_path / "bad.yml"
    path.write_text("environments:\n  prod:\n    dsn: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: not valid YAML at line ")
    assert ", column " in msg


def test_missing_and_empty_file_say_what_to_do(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yml")
    assert str(info.value) == (
        f"config file {tmp_path / 'nope.yml'} does not exist: pass --config with the path of your YAML file"
    )
    empty = tmp_path / "empty.yml"
    empty.write_text("# nothing yet\n")
    with pytest.raises(ConfigError) as info:
        load_config(empty)
    assert str(info.value) == f"{empty} is empty: it needs at least 'environments:' with one environment and its dsn"
