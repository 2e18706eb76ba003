"""`pgsessions check`: config, reachability, versions, privileges, recovery roles, state store, Slack."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml
from psycopg import sql as pgsql

from bot.cli import build_parser
from tests.harness.bot import SIGNING_SECRET, env_config
from tests.harness.fake_slack import FakeSlack
from tests.harness.pgcluster import PW_ROLE, PW_ROLE_PASSWORD

TOKEN = "xoxb-check-9c1d-SLACKSECRET"


def pgsessions_exe() -> str:
    exe = Path(sys.executable).with_name("pgsessions")
    return str(exe) if exe.exists() else "pgsessions"


def write_config(tmp_path: Path, config: dict) -> Path:
    path = tmp_path / f"pgsessions-{uuid.uuid4().hex[:6]}.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_check(path: Path, *extra: str) -> tuple[int, dict]:
    """In-process `pgsessions check --json` (os.environ as the test set it)."""
    import contextlib
    import io

    args = build_parser().parse_args(["check", "--config", str(path), "--json", *extra])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = args.func(args)
    return code, json.loads(out.getvalue())


def host(report: dict, env: str, name: str) -> dict:
    return next(h for h in report["hosts"] if h["env"] == env and h["host"] == name)


def finding(part: dict, check: str) -> dict:
    return next(f for f in part["findings"] if f["check"] == check)


def access():
    return {"access": {"approvers": ["U2"]}}


@pytest.fixture
def no_slack_env(monkeypatch):
    for var in ("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_API_URL"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def slack(monkeypatch):
    with FakeSlack(token=TOKEN) as fake:
        monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
        monkeypatch.setenv("SLACK_SIGNING_SECRET", SIGNING_SECRET)
        monkeypatch.setenv("SLACK_API_URL", fake.api_url)
        monkeypatch.delenv("SLACK_APP_TOKEN", raising=False)
        yield fake


@pytest.fixture
def state_url(pg):
    name = f"pgs_check_{uuid.uuid4().hex[:8]}"
    pg.primary.sql(pgsql.SQL("CREATE DATABASE {}").format(pgsql.Identifier(name)))
    return f"postgresql://postgres@{pg.primary.host}:{pg.primary.port}/{name}"


def test_healthy_pair_through_the_real_command(pg, tmp_path, state_url):
    """The CLI end to end: a password DSN from ${VAR}, a standby, a PostgreSQL state store, Slack."""
    config = {
        "state": state_url,
        "environments": {
            "prod": env_config(pg, user=PW_ROLE, **access()) | {
                "dsn": pg.primary.dsn(user=PW_ROLE) + " password=${PGS_CHECK_PW}",
                "standbys": {"replica1": pg.standby.dsn(user=PW_ROLE) + " password=${PGS_CHECK_PW}"},
            },
        },
    }
    path = write_config(tmp_path, config)
    with FakeSlack(token=TOKEN) as fake:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "PG"))}
        env.update(PGS_CHECK_PW=PW_ROLE_PASSWORD, SLACK_BOT_TOKEN=TOKEN, SLACK_SIGNING_SECRET=SIGNING_SECRET,
                   SLACK_API_URL=fake.api_url)
        started = time.monotonic()
        text = subprocess.run([pgsessions_exe(), "check", "--config", str(path)], env=env, capture_output=True,
                              text=True, timeout=60)
        js = subprocess.run([pgsessions_exe(), "check", "--config", str(path), "--json"], env=env,
                            capture_output=True, text=True, timeout=60)
        elapsed = time.monotonic() - started
    assert text.returncode == 0, text.stdout + text.stderr
    assert js.returncode == 0, js.stdout + js.stderr
    for out in (text.stdout + text.stderr, js.stdout + js.stderr):
        assert PW_ROLE_PASSWORD not in out and TOKEN not in out and "SLACKSECRET" not in out and SIGNING_SECRET not in out
    assert elapsed < 20

    lines = text.stdout.splitlines()
    header = next(line for line in lines if line.startswith("ENVIRONMENT"))
    assert "HOST" in header and "CONNECT" in header and "PRIVILEGES" in header
    primary_row = next(line for line in lines if line.startswith("prod") and " primary " in line)
    standby_row = next(line for line in lines if line.startswith("prod") and " replica1 " in line)
    assert " ok " in primary_row and "not in recovery" in primary_row and "pg_monitor, pg_signal_backend" in primary_row
    assert " ok " in standby_row and "in recovery" in standby_row and " ms " in standby_row
    assert "ready." in lines[-1] and "NOT" not in lines[-1]

    report = json.loads(js.stdout)
    assert report["ok"] is True
    p, s = host(report, "prod", "primary"), host(report, "prod", "replica1")
    assert p["status"] == s["status"] == "ok"
    assert p["in_recovery"] is False and s["in_recovery"] is True
    assert p["server_version_num"] >= 140000 and p["server_version"]
    assert p["pg_monitor"] is p["pg_signal_backend"] is True and p["superuser"] is False
    assert p["user"] == PW_ROLE and p["connect_ms"] is not None and p["connect_ms"] >= 0
    assert p["system_identifier"] and p["system_identifier"] == s["system_identifier"]
    assert s["wal_receiver_status"] == "streaming"
    assert "password" not in p["target"] and p["target"].endswith(f"as {PW_ROLE}")
    assert report["state"]["status"] == "ok" and report["state"]["target"].startswith("postgresql ")
    assert report["slack"]["status"] == "ok"
    assert set(report["slack"]["scopes"]) >= {"commands", "chat:write", "chat:write.public", "users:read",
                                              "usergroups:read"}


def test_unreachable_host_fails_and_the_others_still_pass(pg, tmp_path, no_slack_env):
    config = {
        "state": f"sqlite:///{tmp_path}/state.db",
        "environments": {
            "prod": env_config(pg, **access()),
            "gone": {"dsn": f"postgresql://{PW_ROLE}:{PW_ROLE_PASSWORD}@127.0.0.1:9/postgres", **access()},
        },
    }
    code, report = run_check(write_config(tmp_path, config))
    assert code == 1 and report["ok"] is False
    gone = host(report, "gone", "primary")
    assert gone["status"] == "fail"
    assert "connection refused" in finding(gone, "reachable")["message"]
    assert gone["connect_ms"] is None
    assert host(report, "prod", "primary")["status"] == "ok"
    assert host(report, "prod", "replica1")["status"] == "ok"
    assert PW_ROLE_PASSWORD not in json.dumps(report)
    # --env limits the check to the healthy environment, which then passes
    code, report = run_check(write_config(tmp_path, config), "--env", "prod")
    assert code == 0 and {h["env"] for h in report["hosts"]} == {"prod"}


def test_hosts_are_checked_concurrently_within_their_connect_timeout(pg, tmp_path, no_slack_env):
    """Three servers that accept TCP but never answer: each fails at its 2 s connect timeout, together."""
    silent = []
    for _ in range(3):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(16)  # the kernel completes the handshake; nobody ever answers the startup packet
        silent.append(s)
    try:
        config = {
            "state": f"sqlite:///{tmp_path}/state.db",
            "environments": {
                "hung": {
                    "dsn": f"host=127.0.0.1 port={silent[0].getsockname()[1]} dbname=postgres user=x",
                    "standbys": {f"s{i}": f"host=127.0.0.1 port={s.getsockname()[1]} dbname=postgres user=x"
                                 for i, s in enumerate(silent[1:], 1)},
                    "timeouts": {"connect": "2s"},
                    **access(),
                },
                "prod": env_config(pg, **access()),
            },
        }
        started = time.monotonic()
        code, report = run_check(write_config(tmp_path, config))
        elapsed = time.monotonic() - started
    finally:
        for s in silent:
            s.close()
    assert code == 1
    hung = [h for h in report["hosts"] if h["env"] == "hung"]
    assert len(hung) == 3 and all(h["status"] == "fail" for h in hung)
    for h in hung:
        assert "2s connect timeout" in finding(h, "reachable")["message"], h
    assert host(report, "prod", "primary")["status"] == "ok"
    assert 1.9 < elapsed < 5.0, elapsed  # one timeout, not three in a row


def test_role_without_pg_signal_backend(pg, tmp_path, no_slack_env):
    role = f"pgs_nosig_{uuid.uuid4().hex[:6]}"
    pg.primary.sql(pgsql.SQL("CREATE ROLE {} LOGIN IN ROLE pg_monitor").format(pgsql.Identifier(role)))
    pg.wait_replayed()
    try:
        config = {"state": f"sqlite:///{tmp_path}/state.db",
                  "environments": {"prod": env_config(pg, user=role, **access())}}
        code, report = run_check(write_config(tmp_path, config))
        assert code == 1 and report["ok"] is False
        for name in ("primary", "replica1"):
            h = host(report, "prod", name)
            assert h["status"] == "fail"
            assert h["pg_monitor"] is True and h["pg_signal_backend"] is False
            msg = finding(h, "pg_signal_backend")["message"]
            assert "only the role's own sessions can be signalled" in msg
            assert f"GRANT pg_signal_backend TO {role}" in msg
            assert finding(h, "pg_read_all_stats")["level"] == "ok"
            assert "through pg_monitor" in finding(h, "pg_read_all_stats")["message"]

        # the readable table says the same
        args = build_parser().parse_args(["check", "--config", str(write_config(tmp_path, config))])
        import contextlib
        import io

        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert args.func(args) == 1
        assert "pg_monitor, no pg_signal_backend" in out.getvalue()
        assert "NOT ready." in out.getvalue()

        # when signalling is switched off the privilege is not needed
        config["environments"]["prod"]["access"]["allow_kill"] = False
        code, report = run_check(write_config(tmp_path, config))
        assert code == 0, report
    finally:
        pg.primary.sql(pgsql.SQL("DROP ROLE {}").format(pgsql.Identifier(role)))


def test_role_without_pg_read_all_stats(pg, tmp_path, no_slack_env):
    role = f"pgs_nostats_{uuid.uuid4().hex[:6]}"
    pg.primary.sql(pgsql.SQL("CREATE ROLE {} LOGIN IN ROLE pg_signal_backend").format(pgsql.Identifier(role)))
    try:
        config = {"state": f"sqlite:///{tmp_path}/state.db",
                  "environments": {"prod": {"dsn": pg.primary.dsn(user=role), **access()}}}
        code, report = run_check(write_config(tmp_path, config))
        assert code == 1
        h = host(report, "prod", "primary")
        assert h["pg_read_all_stats"] is False and h["pg_monitor"] is False
        msg = finding(h, "pg_read_all_stats")["message"]
        assert finding(h, "pg_read_all_stats")["level"] == "fail"
        # says which features are lost, and the fix
        assert "<insufficient privilege>" in msg and "pg_stat_replication" in msg and "not streaming" in msg, msg
        assert f"GRANT pg_read_all_stats TO {role}" in msg
        assert finding(h, "pg_signal_backend")["level"] == "ok"
    finally:
        pg.primary.sql(pgsql.SQL("DROP ROLE {}").format(pgsql.Identifier(role)))


def test_least_privilege_role_is_ready_without_pg_monitor(pg, tmp_path, no_slack_env):
    """pg_read_all_stats + pg_signal_backend is everything the bot needs; pg_monitor is not asked for."""
    role = f"pgs_least_{uuid.uuid4().hex[:6]}"
    pg.primary.sql(pgsql.SQL("CREATE ROLE {} LOGIN IN ROLE pg_read_all_stats, pg_signal_backend")
                   .format(pgsql.Identifier(role)))
    pg.wait_replayed()
    try:
        config = {"state": f"sqlite:///{tmp_path}/state.db",
                  "environments": {"prod": env_config(pg, user=role, **access())}}
        code, report = run_check(write_config(tmp_path, config))
        assert code == 0, report
        for name in ("primary", "replica1"):
            h = host(report, "prod", name)
            # warnings only where a newer server offers a grant the role lacks (16+: reserved slots, 18+: autovacuum)
            warned = {f["check"] for f in h["findings"] if f["level"] != "ok"}
            assert warned <= {"reserved_slots", "autovacuum"} and h["status"] in ("ok", "warn"), h
            if h["server_version_num"] < 160000:
                assert h["status"] == "ok", h
            assert h["pg_monitor"] is False and h["pg_read_all_stats"] is h["pg_signal_backend"] is True
            assert finding(h, "pg_read_all_stats")["level"] == "ok"
            assert not [f for f in h["findings"] if f["check"] == "pg_monitor"]
            if name == "replica1":
                assert not [f for f in h["findings"] if f["check"] == "autovacuum"], "no autovacuum on a standby"
                continue
            version = h["server_version_num"]
            auto = finding(h, "autovacuum")
            if version < 180000:
                assert auto["level"] == "ok" and "PostgreSQL 18" in auto["message"], auto
                assert h["pg_signal_autovacuum_worker"] is None
            else:
                assert auto["level"] == "warn" and "GRANT pg_signal_autovacuum_worker" in auto["message"], auto
        assert host(report, "prod", "replica1")["wal_receiver_status"] == "streaming"
        args = build_parser().parse_args(["check", "--config", str(write_config(tmp_path, config))])
        import contextlib
        import io

        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert args.func(args) == 0
        assert "pg_read_all_stats, pg_signal_backend" in out.getvalue()
    finally:
        pg.primary.sql(pgsql.SQL("DROP ROLE {}").format(pgsql.Identifier(role)))


def test_standby_that_is_not_in_recovery(pg, tmp_path, no_slack_env):
    config = {
        "state": f"sqlite:///{tmp_path}/state.db",
        "environments": {"prod": env_config(pg, **access()) | {"standbys": {"notastandby": pg.primary.dsn(
            user="pgsessions_bot")}}},
    }
    code, report = run_check(write_config(tmp_path, config))
    assert code == 1
    h = host(report, "prod", "notastandby")
    assert h["status"] == "fail" and h["in_recovery"] is False
    assert "is not in recovery" in finding(h, "recovery")["message"]
    assert "environments.prod.standbys.notastandby" in finding(h, "recovery")["message"]
    assert host(report, "prod", "primary")["status"] == "ok"


def test_primary_that_is_in_recovery(pg, tmp_path, no_slack_env):
    config = {
        "state": f"sqlite:///{tmp_path}/state.db",
        "environments": {"prod": {"dsn": pg.standby.dsn(user="pgsessions_bot"), **access()}},
    }
    code, report = run_check(write_config(tmp_path, config))
    assert code == 1
    assert "points at a standby" in finding(host(report, "prod", "primary"), "recovery")["message"]


def test_config_error_names_the_key_and_exits_2(tmp_path, no_slack_env):
    path = write_config(tmp_path, {"environments": {"prod": {"dsn": "host=x", "thresholds": {"idle": "5x"}}}})
    res = subprocess.run([pgsessions_exe(), "check", "--config", str(path)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert "environments.prod.thresholds.idle" in res.stderr and "is not a duration" in res.stderr
    res = subprocess.run([pgsessions_exe(), "check", "--config", str(path), "--json"], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 2
    body = json.loads(res.stdout)
    assert body["ok"] is False and "environments.prod.thresholds.idle" in body["config"]["error"]
    missing = subprocess.run([pgsessions_exe(), "check", "--config", str(tmp_path / "nope.yml")],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_config_error_does_not_echo_a_password(tmp_path, no_slack_env):
    path = write_config(tmp_path, {"environments": {"prod": {
        "dsn": f"postgresql://u:{PW_ROLE_PASSWORD}@h/db", "standbys": {"lag": f"postgresql://u:{PW_ROLE_PASSWORD}@h/db"}}}})
    res = subprocess.run([pgsessions_exe(), "check", "--config", str(path), "--json"], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 2
    assert "standbys" in res.stderr
    assert PW_ROLE_PASSWORD not in res.stdout + res.stderr


def test_slack_missing_scope_and_bad_token(pg, tmp_path, slack):
    config = {"state": f"sqlite:///{tmp_path}/state.db", "environments": {"prod": env_config(pg, **access())}}
    path = write_config(tmp_path, config)
    code, report = run_check(path)
    assert code == 0 and report["slack"]["status"] == "ok"
    assert slack.calls_for("auth.test")

    slack.scopes = ["commands", "chat:write", "users:read"]
    code, report = run_check(path)
    assert code == 1
    msg = finding(report["slack"], "scopes")["message"]
    assert "chat:write.public" in msg and "usergroups:read" in msg and "commands," not in msg

    slack.token = "xoxb-another-token"
    code, report = run_check(path)
    assert code == 1
    assert "invalid_auth" in finding(report["slack"], "auth.test")["message"]
    assert TOKEN not in json.dumps(report) and "SLACKSECRET" not in json.dumps(report)

    code, report = run_check(path, "--no-slack")
    assert code == 0 and report["slack"]["status"] == "skip"


def test_slack_missing_feature_scope_says_what_stops_working(pg, tmp_path, slack):
    config = {"state": f"sqlite:///{tmp_path}/state.db", "environments": {"prod": env_config(pg, **access())}}
    path = write_config(tmp_path, config)
    # the fake reports the granted scopes in x-oauth-scopes, as Slack does: everything but mentions
    slack.scopes = ["commands", "chat:write", "chat:write.public", "users:read", "usergroups:read"]
    code, report = run_check(path)
    found = finding(report["slack"], "scopes")
    assert found["level"] == "warn", found
    assert "app_mentions:read" in found["message"] and "@pgsessions mentions" in found["message"]
    slack.scopes.append("app_mentions:read")
    code, report = run_check(path)
    assert finding(report["slack"], "scopes")["level"] == "ok"


def test_socket_mode_app_token(pg, tmp_path, slack, monkeypatch):
    config = {"state": f"sqlite:///{tmp_path}/state.db", "environments": {"prod": env_config(pg, **access())}}
    path = write_config(tmp_path, config)
    slack.app_token = "xapp-1-good-APPSECRET"
    slack.socket_mode_url = "ws://127.0.0.1:9/socket"
    monkeypatch.delenv("SLACK_SIGNING_SECRET")
    monkeypatch.setenv("SLACK_APP_TOKEN", "xapp-1-good-APPSECRET")
    code, report = run_check(path)
    assert code == 0, report["slack"]
    assert report["slack"]["mode"] == "socket" and finding(report["slack"], "socket mode")["level"] == "ok"
    monkeypatch.setenv("SLACK_APP_TOKEN", "xapp-1-bad-APPSECRET")
    code, report = run_check(path)
    assert code == 1 and "invalid_auth" in finding(report["slack"], "socket mode")["message"]
    assert "APPSECRET" not in json.dumps(report)
    monkeypatch.delenv("SLACK_APP_TOKEN")
    code, report = run_check(path)
    assert code == 1 and "neither SLACK_APP_TOKEN" in finding(report["slack"], "mode")["message"]


def test_no_slack_token_is_skipped_not_failed(pg, tmp_path, no_slack_env):
    config = {"state": f"sqlite:///{tmp_path}/state.db", "environments": {"prod": env_config(pg, **access())}}
    code, report = run_check(write_config(tmp_path, config))
    assert code == 0
    assert report["slack"]["status"] == "skip"


def test_state_store_unusable(pg, tmp_path, no_slack_env):
    env = {"prod": env_config(pg, **access())}
    code, report = run_check(write_config(tmp_path, {"state": f"sqlite:///{tmp_path}/no/such/dir/state.db",
                                                     "environments": env}))
    assert code == 1 and report["state"]["status"] == "fail"
    code, report = run_check(write_config(tmp_path, {
        "state": f"postgresql://postgres:{PW_ROLE_PASSWORD}@127.0.0.1:9/pgs_state", "environments": env}))
    assert code == 1 and report["state"]["status"] == "fail"
    assert "not usable" in finding(report["state"], "writable")["message"]
    assert PW_ROLE_PASSWORD not in json.dumps(report)
    assert report["state"]["target"] == "postgresql 127.0.0.1:9/pgs_state as postgres"


def test_strict_turns_warnings_into_failure(pg, tmp_path, no_slack_env):
    # a superuser role works, but it is more than the bot needs: a warning
    config = {"state": f"sqlite:///{tmp_path}/state.db",
              "environments": {"prod": {"dsn": pg.primary.dsn(user="postgres"), **access()}}}
    path = write_config(tmp_path, config)
    code, report = run_check(path)
    assert code == 0
    h = host(report, "prod", "primary")
    assert h["superuser"] is True and h["status"] == "warn"
    code, report = run_check(path, "--strict")
    assert code == 1 and report["ok"] is False


def test_reserved_connection_slots_are_reported(pg, tmp_path, no_slack_env):
    # the harness's bot role is not a superuser; a superuser may use superuser_reserved_connections
    config = {"state": f"sqlite:///{tmp_path}/state.db",
              "environments": {"prod": env_config(pg, **access()),
                               "su": {"dsn": pg.primary.dsn(user="postgres"), **access()}}}
    code, report = run_check(write_config(tmp_path, config))
    assert code == 0, report
    version = host(report, "prod", "primary")["server_version_num"]
    for name in ("primary", "replica1"):
        h = host(report, "prod", name)
        f = finding(h, "reserved_slots")
        if version < 160000:
            assert h["reserved_slots"] == f"none (PostgreSQL {h['server_version']})" and f["level"] == "ok"
            assert "keeps open from start-up" in f["message"]
        else:
            assert h["reserved_slots"] == "none" and f["level"] == "warn"
            assert "GRANT pg_use_reserved_connections TO pgsessions_bot" in f["message"]
    su = host(report, "su", "primary")
    assert su["reserved_slots"].startswith("superuser (") and finding(su, "reserved_slots")["level"] == "ok"
