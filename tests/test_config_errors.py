"""Every configuration error names the key it is about and says how to fix it (issue 12 §6).

One case per validator of ``bot/config.py`` (and per kind of pydantic error the file can produce):
the message must contain the key's full path and the words of the fix, must not contain a literal
``{...}`` placeholder (a missing f-string prefix), and must never echo a password.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest

from bot.config import ConfigError, load_config, parse_config

pytestmark = pytest.mark.unit

DSN = "host=db1 dbname=postgres user=pgsessions_bot"
BASE = {"environments": {"prod": {"dsn": DSN, "standbys": {"replica1": "host=db2 user=pgsessions_bot"}}}}


def env(**changes) -> dict:
    data = copy.deepcopy(BASE)
    data["environments"]["prod"].update(changes)
    return data


def top(**changes) -> dict:
    data = copy.deepcopy(BASE)
    data.update(changes)
    return data


# (config, the key the message must name, words of the fix it must give)
CASES = {
    # Slack workspace
    "team_id not a team id": (top(slack={"team_id": "acme"}), "slack.team_id", "copy it from the workspace's URL"),
    "viewer not a Slack id": (env(access={"viewers": ["ops team"]}), "environments.prod.access.viewers",
                              "copy the id from the person's or group's profile"),
    # Channel defaults
    "channel default to an unknown environment": (top(channels_default_env={"C0123": "qa"}),
                                                  "channels_default_env.C0123", "use one of prod or remove the line"),
    # State
    "state_retention under a day": (top(state_retention="1h"), "state_retention", "at least 1d"),
    # The fleet
    "fleet lease too short": (top(fleet={"lease": "0.1s"}), "fleet.lease", "0.75 x the smallest check_every"),
    # Timeouts
    "connect timeout too small": (env(timeouts={"connect": "0.5s"}), "environments.prod.timeouts.connect", "at least 1s"),
    "statement timeout zero": (env(timeouts={"statement": "0s"}), "environments.prod.timeouts.statement", "more than 0s"),
    # Duration (every duration field shares the parser)
    "bad duration": (env(thresholds={"idle": "5x"}), "environments.prod.thresholds.idle", "90s, 5m"),
    "bad duration in a timeout": (env(timeouts={"statement": "soon"}), "environments.prod.timeouts.statement", "90s, 5m"),
    # Access
    "approver not a Slack id": (env(access={"approvers": ["bob"]}), "environments.prod.access.approvers",
                                "copy the id from the person's or group's profile"),
    "requester not a Slack id": (env(access={"requesters": "alice"}), "environments.prod.access.requesters",
                                 "user id (U…/W…)"),
    "request_ttl too short": (env(access={"request_ttl": "10s"}), "environments.prod.access.request_ttl", "at least 30s"),
    "approvals_required zero": (env(access={"approvals_required": 0}), "environments.prod.access.approvals_required",
                                "greater than or equal to 1"),
    "approvals_required too many": (env(access={"approvals_required": 11}),
                                    "environments.prod.access.approvals_required", "less than or equal to 10"),
    "max_bulk zero": (env(access={"max_bulk": 0}), "environments.prod.access.max_bulk", "greater than or equal to 1"),
    "self_approval not a bool": (env(access={"self_approval": "maybe"}), "environments.prod.access.self_approval",
                                 "write true or false"),
    "channels not a list": (env(access={"channels": {"C1": 1}}), "environments.prod.access.channels",
                            "write a YAML list"),
    # LagAlert
    "check_every too small": (env(lag_alert={"channel": "C1", "check_every": "0.5s"}),
                              "environments.prod.lag_alert.check_every", "at least 1s"),
    "lag_alert without channel": (env(lag_alert={"threshold": "1m"}), "environments.prod.lag_alert.channel",
                                  "add it to the file"),
    "consecutive zero": (env(lag_alert={"channel": "C1", "consecutive": 0}), "environments.prod.lag_alert.consecutive",
                         "greater than or equal to 1"),
    "min_bytes negative": (env(lag_alert={"channel": "C1", "min_bytes": -1}), "environments.prod.lag_alert.min_bytes",
                           "greater than or equal to 0"),
    "consecutive not a number": (env(lag_alert={"channel": "C1", "consecutive": "two"}),
                                 "environments.prod.lag_alert.consecutive", "write a whole number"),
    # Poolers (issue 25)
    "pooler host not a host": (env(poolers={"pgb1": {"dsn": "host=pgb1 dbname=pgbouncer", "host": "replica9"}}),
                               "environments.prod.poolers.pgb1.host", "use one of primary, replica1"),
    "pooler name with a space": (env(poolers={"pgb 1": {"dsn": "host=pgb1 dbname=pgbouncer"}}),
                                 "environments.prod.poolers", "must be letters, digits"),
    "pooler dsn broken": (env(poolers={"pgb1": {"dsn": "host=pgb1 =oops"}}), "environments.prod.poolers.pgb1.dsn",
                          "write it as 'host=db1"),
    "pooler timeout too small": (env(poolers={"pgb1": {"dsn": "host=pgb1", "timeouts": {"connect": "0.2s"}}}),
                                 "environments.prod.poolers.pgb1.timeouts.connect", "at least 1s"),
    # Watch and ignore (issue 14)
    "watch check_every too small": (env(watch={"channel": "C1", "check_every": "0.5s"}),
                                    "environments.prod.watch.check_every", "at least 1s"),
    "watch connections not a percentage": (env(watch={"channel": "C1", "connections": "most"}),
                                           "environments.prod.watch.connections", "write it like 90%"),
    "watch connections a bool": (env(watch={"channel": "C1", "connections": True}),
                                 "environments.prod.watch.connections", "a percentage like 90%"),
    "watch connections over 100%": (env(watch={"channel": "C1", "connections": "120%"}),
                                    "environments.prod.watch.connections", "between 1% and 100%"),
    "ignore query not a regex": (env(ignore=[{"query": "(unclosed"}]), "environments.prod.ignore[0].query",
                                 "fix the pattern"),
    # protect (issue 23 §11), per environment and at the top level
    "protect role empty": (env(protect={"roles": ["app", ""]}), "environments.prod.protect.roles",
                           "remove it or write the exact name"),
    "top-level protect database empty": (top(protect={"databases": ""}), "protect.databases",
                                         "remove it or write the exact name"),
    "protect superusers not a bool": (env(protect={"superusers": "sometimes"}), "environments.prod.protect.superusers",
                                      "write true or false"),
    "protect key misspelt": (top(protect={"role": ["x"]}), "protect.role", "did you mean 'roles'?"),
    "ignore item without keys": (env(ignore=[{}]), "environments.prod.ignore[0]",
                                 "needs at least one of app, user, db, query"),
    # Listing
    "max_sessions too many": (env(listing={"max_sessions": 23}), "environments.prod.listing.max_sessions",
                              "less than or equal to 22"),
    "query_chars too few": (env(listing={"query_chars": 10}), "environments.prod.listing.query_chars",
                            "greater than or equal to 40"),
    # ClearDb
    "clear_db.allow not a list": (env(clear_db={"allow": {"postgres": True}}), "environments.prod.clear_db.allow",
                                  "write a YAML list"),
    # Environment: dsn and standbys
    "dsn invalid": (env(dsn="host=db1 password=Sekr1tPw '"), "environments.prod.dsn",
                    "write it as 'host=db1 dbname=postgres user=pgsessions_bot'"),
    "dsn missing": ({"environments": {"prod": {}}}, "environments.prod.dsn", "add it to the file"),
    "standby name invalid": (env(standbys={"bad name": "host=x"}), "environments.prod.standbys",
                             "must be letters, digits"),
    "standby name a command word": (env(standbys={"lag": "host=x"}), "environments.prod.standbys",
                                    "rename it (e.g. lag1)"),
    "standby dsn invalid": (env(standbys={"r2": "'unterminated password=Sekr1tPw"}), "environments.prod.standbys",
                            "standby 'r2': not a valid connection string: write it as"),
    # Config
    "no environment": ({"environments": {}}, "environments", "add one under 'environments:'"),
    "environment name invalid": ({"environments": {"bad name": {"dsn": DSN}}}, "environments",
                                 "must be letters, digits"),
    "environment name a command word": ({"environments": {"help": {"dsn": DSN}}}, "environments",
                                        "rename it (e.g. help1)"),
    "environments not a mapping": ({"environments": ["prod"]}, "environments", "write a YAML mapping"),
    "state not a database url": (top(state="mysql://x"), "state", "'sqlite:///path/to/file.db'"),
    "lag_alert without standbys": ({"environments": {"prod": {"dsn": DSN, "lag_alert": {"channel": "C1"}}}},
                                   "environments.prod.lag_alert", "add environments.prod.standbys or remove lag_alert"),
    "users value not text": (top(users={"U1": 5}), "users.U1", "write it as text"),
    # unknown keys, with and without a close match
    "unknown key with a guess": (env(thresholdz={}), "environments.prod.thresholdz", "did you mean 'thresholds'?"),
    "unknown key without a guess": (env(zzz=1), "environments.prod.zzz", "known keys here: dsn, standbys"),
    # ${VAR} expansion
    "unset variable": (env(dsn="host=db1 password=${PGS_TEST_UNSET_PW}"), "environments.prod.dsn",
                       "export PGS_TEST_UNSET_PW=..."),
}


@pytest.mark.parametrize("name", list(CASES))
def test_every_error_names_the_key_and_the_fix(name):
    data, key, fix = CASES[name]
    with pytest.raises(ConfigError) as info:
        parse_config(data, environ={})
    msg = str(info.value)
    assert key in msg, msg
    assert fix in msg, msg
    assert not re.search(r"\{[a-z_]+\}", msg), f"an unformatted placeholder: {msg}"
    assert "Sekr1tPw" not in msg  # a DSN's password is never echoed


def test_the_lag_alert_message_names_the_environment_not_a_placeholder():
    with pytest.raises(ConfigError) as info:
        parse_config({"environments": {"staging": {"dsn": DSN, "lag_alert": {"channel": "C1"}}}}, environ={})
    assert "add environments.staging.standbys or remove lag_alert" in str(info.value)
    assert "{name}" not in str(info.value)


def test_a_file_that_is_not_a_mapping():
    with pytest.raises(ConfigError, match="must be a YAML mapping with at least 'environments:'"):
        parse_config(["prod"], environ={})


def test_file_errors_name_the_file_and_the_fix(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(missing)
    assert str(missing) in str(info.value) and "pass --config with the path" in str(info.value)

    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(ConfigError) as info:
        load_config(empty)
    assert str(empty) in str(info.value) and "needs at least 'environments:'" in str(info.value)

    broken = tmp_path / "broken.yaml"
    broken.write_text("environments:\n  prod: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        load_config(broken)
    assert str(broken) in str(info.value) and "not valid YAML at line" in str(info.value)


def test_every_validator_has_a_case():
    """A new validator in bot/config/ needs a case here: count them."""
    import bot.config as config

    source = "".join(p.read_text(encoding="utf-8") for p in sorted(Path(config.__file__).parent.glob("*.py")))
    validators = len(re.findall(r"@(?:field|model)_validator\(", source))
    raises = len(re.findall(r"raise (?:ValueError|ConfigError)\(", source))
    # 22 validators with 27 ValueErrors between them (each has a case above), plus 6 ConfigErrors: the
    # unset ${VAR}, a non-mapping, the wrapped validation errors, and the file missing / broken / empty
    assert (validators, raises) == (22, 33), (validators, raises)
