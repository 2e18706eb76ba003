"""Configuration: one pydantic model from YAML, ${VAR} secrets, errors that name the key and the fix."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from bot.config import ConfigError, load_config, parse_config
from bot.secrets import SECRETS, scrub

BASE = {"environments": {"prod": {"dsn": "host=db1 dbname=postgres user=pgsessions_bot"}}}


def env_with(**values):
    return {"environments": {"prod": {"dsn": "host=db1 dbname=postgres user=pgsessions_bot", **values}}}


def error_of(data, environ=None) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data, environ or {})
    return str(info.value)


@pytest.mark.unit
def test_defaults_and_the_contract_keys(tmp_path):
    path = tmp_path / "c.yml"
    path.write_text(textwrap.dedent("""
        state: sqlite:///pgsessions-state.db
        environments:
          prod:
            dsn: "host=db1 dbname=postgres user=pgsessions_bot password=${PROD_DB_PASSWORD}"
            standbys:
              replica1: "postgresql://pgsessions_bot@db2/postgres"
            thresholds: {long_running: 5m, idle_in_transaction: 1m, idle: 1h}
            access:
              requesters: ["*"]
              approvers: ["S0DBAS"]
              self_approval: false
              request_ttl: 15m
            lag_alert: {channel: C0ALERTS, threshold: 30s, check_every: 30s}
    """))
    cfg = load_config(path, environ={"PROD_DB_PASSWORD": "hunter2-secret"})
    prod = cfg.environments["prod"]
    assert "password=hunter2-secret" in prod.dsn
    assert prod.thresholds.long_running == 300 and prod.thresholds.idle_in_transaction == 60
    assert prod.thresholds.idle == 3600 and prod.access.request_ttl == 900
    assert prod.lag_alert.threshold == 30 and prod.lag_alert.consecutive == 2
    assert prod.hosts() == {"primary": prod.dsn, "replica1": "postgresql://pgsessions_bot@db2/postgres"}
    assert prod.timeouts.connect == 5 and prod.timeouts.statement == 5
    assert prod.access.approvals_required == 1 and prod.access.require_reason is True
    # the expanded secret is scrubbed from anything logged
    assert "hunter2-secret" not in scrub(f"connecting with {prod.dsn}")


@pytest.mark.unit
@pytest.mark.parametrize("value, seconds", [("90s", 90), ("5m", 300), ("1h", 3600), ("1h30m", 5400), (45, 45), ("45", 45)])
def test_durations(value, seconds):
    cfg = parse_config(env_with(thresholds={"idle": value}), {})
    assert cfg.environments["prod"].thresholds.idle == seconds


@pytest.mark.unit
def test_missing_variable_names_key_and_variable():
    msg = error_of(env_with(dsn="host=db1 password=${NOPE_PW}"))
    assert msg.startswith("environments.prod.dsn: environment variable NOPE_PW is not set")
    assert "export NOPE_PW=" in msg


@pytest.mark.unit
def test_variable_default():
    cfg = parse_config(env_with(dsn="host=${DBHOST:-db9} dbname=postgres"), {})
    assert cfg.environments["prod"].dsn == "host=db9 dbname=postgres"


@pytest.mark.unit
def test_unknown_key_suggests_the_right_one():
    msg = error_of(env_with(thresholds={"idel": "5m"}))
    assert "environments.prod.thresholds.idel: unknown key: did you mean 'idle'?" in msg
    msg = error_of(env_with(lag_alert={"channel": "C1", "treshold": "5s"}, standbys={"r1": "host=x"}))
    assert "environments.prod.lag_alert.treshold: unknown key: did you mean 'threshold'?" in msg


@pytest.mark.unit
def test_bad_duration_says_how_to_write_one():
    msg = error_of(env_with(thresholds={"idle": "5 minutes please"}))
    assert msg.startswith("environments.prod.thresholds.idle:")
    assert "90s, 5m, 1h" in msg


@pytest.mark.unit
def test_bad_dsn_is_not_echoed():
    msg = error_of(env_with(dsn="host=db1 password='unclosed-s3cret"))
    assert "environments.prod.dsn: not a valid connection string" in msg
    assert "unclosed-s3cret" not in msg


@pytest.mark.unit
def test_bad_principal():
    msg = error_of(env_with(access={"approvers": ["alice"]}))
    assert "environments.prod.access.approvers" in msg and "user-group id" in msg


@pytest.mark.unit
def test_missing_dsn_and_empty_environments():
    assert "environments.prod.dsn: required but missing" in error_of({"environments": {"prod": {}}})
    assert "no environment configured" in error_of({"environments": {}})
    assert "environments: required but missing" in error_of({"state": "sqlite:///x.db"})


@pytest.mark.unit
def test_reserved_names():
    assert "is a command word" in error_of({"environments": {"help": {"dsn": "host=x"}}})
    assert "is a command word" in error_of(env_with(standbys={"lag": "host=x"}))


@pytest.mark.unit
def test_lag_alert_needs_standbys():
    msg = error_of(env_with(lag_alert={"channel": "C1"}))
    assert "lag_alert is set but the environment has no standbys" in msg


@pytest.mark.unit
def test_bad_state_url():
    assert "state must be 'sqlite:///" in error_of({**BASE, "state": "redis://x"})


@pytest.mark.unit
def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yml")
    empty = tmp_path / "empty.yml"
    empty.write_text("")
    with pytest.raises(ConfigError, match="is empty"):
        load_config(empty)
    broken = tmp_path / "broken.yml"
    broken.write_text("environments:\n  prod: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_config(broken)


@pytest.mark.unit
def test_url_password_in_state_is_a_secret():
    parse_config({**BASE, "state": "postgresql://bot:st4te-pass@db/state"}, {})
    assert "st4te-pass" in SECRETS.snapshot()
    assert scrub("postgresql://bot:st4te-pass@db/state") == "postgresql://bot:***@db/state"


def run_cli(*args, env=None, cwd=None):
    base = {k: v for k, v in os.environ.items() if not k.startswith("SLACK_")}
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], capture_output=True, text=True,
                          env={**base, **(env or {})}, cwd=cwd, timeout=60)


def test_serve_with_a_bad_config_exits_2_naming_the_key(tmp_path):
    path = tmp_path / "c.yml"
    path.write_text("environments:\n  prod:\n    dsn: 'host=x password=${MISSING_PW}'\n")
    res = run_cli("serve", "--config", str(path))
    assert res.returncode == 2
    assert "environments.prod.dsn: environment variable MISSING_PW is not set" in res.stderr
    assert "Traceback" not in res.stderr


def test_serve_without_tokens_says_exactly_what_to_set(tmp_path):
    path = tmp_path / "c.yml"
    path.write_text("environments:\n  prod:\n    dsn: 'host=127.0.0.1 dbname=postgres'\n")
    res = run_cli("serve", "--config", str(path))
    assert res.returncode == 2
    for name in ("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET", "manifest.yml"):
        assert name in res.stderr
