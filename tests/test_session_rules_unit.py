"""``ignore:`` and ``protect:`` matching (bot/session_rules.py) and the policy that answers with it.

No server: the rules are pure; the end-to-end tests are tests/test_protect.py and the ignore / protect
cases of tests/test_lag.py and tests/test_watch.py.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from bot.approval.models import SessionRef, SessionTarget
from bot.approval.policy import Policy
from bot.bulk.tally import verdict_detail
from bot.config import Config, ConfigError, IgnoreRule, Protect, parse_config
from bot.postgres.models import Category, Session
from bot.render.bulk import bulk_offer_blocks
from bot.render.buttons import session_buttons
from bot.session_rules import (
    OWN_STATE_REASON,
    OwnConnection,
    SignalGuard,
    guard_for,
    ignored,
    mark,
    protection,
    split_ignored,
)
from tests.test_policy_unit import Lookup

pytestmark = pytest.mark.unit

HOSTILE = "<!channel> *b* `t`"


def session(pid: int = 1, **kw) -> Session:
    base = dict(
        pid=pid, backend_start=datetime(2026, 12, 1, 10, 0, 0, 123456, tzinfo=UTC), user="app", database="appdb",
        application="web", client_addr=None, state="idle", wait_event_type=None, wait_event=None,
        query="SELECT 1", blocked_by=(), blocking_count=0, categories=(Category.IDLE,), query_secs=None,
        xact_secs=None, state_secs=100.0,
    )
    base.update(kw)
    return Session(**base)  # type: ignore[arg-type]


def config(top: dict | None = None, **env) -> Config:
    return Config.model_validate({**(top or {}), "environments": {"prod": {"dsn": "host=x", **env},
                                                                  "dev": {"dsn": "host=y"}}})


# --- config -------------------------------------------------------------------------------------------


def test_protect_defaults_to_superusers_and_an_environment_overrides_the_top_level_key_by_key():
    assert config().protect_for("prod") == Protect(roles=[], applications=[], databases=[], superusers=True)
    c = config({"protect": {"roles": ["replicator"], "superusers": False}}, protect={"applications": ["backup"]})
    prod = c.protect_for("prod")
    assert prod.roles == ["replicator"] and prod.applications == ["backup"] and prod.superusers is False
    assert c.protect_for("dev") == c.protect
    again = config({"protect": {"roles": ["a"]}}, protect={"roles": ["b"], "superusers": False})
    assert again.protect_for("prod").roles == ["b"], "a key the environment gives replaces the top-level one"
    assert config(protect={"roles": "solo"}).protect_for("prod").roles == ["solo"], "one name may be a string"


@pytest.mark.parametrize("data, key, fix", [
    ({"protect": {"superuser": True}}, "protect.superuser", "did you mean 'superusers'?"),
    ({"protect": {"roles": [""]}}, "protect.roles", "write the exact name"),
    ({"protect": {"superusers": "maybe"}}, "protect.superusers", "write true or false"),
])
def test_protect_errors_name_the_key_and_the_fix(data, key, fix):
    with pytest.raises(ConfigError) as info:
        parse_config({**data, "environments": {"prod": {"dsn": "host=x"}}}, environ={})
    assert key in str(info.value) and fix in str(info.value), str(info.value)


# --- matching -------------------------------------------------------------------------------------------


def test_protection_names_the_rule_that_applies_first():
    p = Protect(roles=["ops"], applications=["backup"], databases=["billing"], superusers=True)
    assert protection(p, user="x", application="y", database="z", is_superuser=True) == \
        "protected: superuser session (protect.superusers)"
    assert protection(p, user="ops", application="y", database="z", is_superuser=False) == \
        "protected: role ops (protect.roles)"
    assert protection(p, user="x", application="backup", database="z", is_superuser=False) == \
        "protected: application backup (protect.applications)"
    assert protection(p, user="x", application="y", database="billing", is_superuser=False) == \
        "protected: database billing (protect.databases)"
    assert protection(p, user="x", application="backupx", database="bill", is_superuser=False) is None, "exact names"
    assert protection(Protect(superusers=False), user="x", application="", database=None, is_superuser=True) is None


def test_the_bots_own_state_store_connections_are_always_protected():
    own = OwnConnection("state_role", "state_db", "pgsessions-state")
    off = Protect(superusers=False)
    assert protection(off, user="state_role", application="pgsessions-state", database="state_db",
                      is_superuser=False, own=own) == OWN_STATE_REASON
    assert protection(off, user="state_role", application="pgsessions-state", database="other",
                      is_superuser=False, own=own) is None, "another database: not the store"
    assert protection(off, user="someone", application="pgsessions-state", database="state_db",
                      is_superuser=False, own=own) is None, "the application name alone protects nothing"


def test_mark_keeps_what_the_bots_role_cannot_do_and_adds_protection():
    p = Protect(roles=["ops"])
    cannot = session(1, is_superuser=True, cannot_signal="superuser session (the bot's role is not a superuser)")
    su = session(2, is_superuser=True)
    ops = session(3, user="ops")
    free = session(4)
    out = mark(p, [cannot, su, ops, free])
    assert out[0].cannot_signal == cannot.cannot_signal
    assert out[1].cannot_signal == "protected: superuser session (protect.superusers)"
    assert out[2].cannot_signal == "protected: role ops (protect.roles)"
    assert out[3] is free and out[3].cannot_signal is None


def test_ignore_matching_and_splitting():
    rules = [IgnoreRule(app="pg_dump"), IgnoreRule(user="etl", query="^COPY")]
    assert ignored(rules, session(application="pg_dump"))
    assert ignored(rules, session(user="etl", query="COPY t TO STDOUT"))
    assert not ignored(rules, session(user="etl", query="SELECT 1")), "every key of an item must match"
    assert not ignored([], session(application="pg_dump"))
    kept, hidden = split_ignored(rules, [session(1, application="pg_dump"), session(2), session(3, user="etl",
                                                                                          query="COPY x")])
    assert [s.pid for s in kept] == [2] and hidden == 2


def test_the_guard_binds_every_rule_as_parameters():
    c = config({"protect": {"roles": ["ops"]}}, protect={"databases": ["billing"], "superusers": False})
    params = guard_for(c, "prod", ("state_role", "state_db", "pgsessions-state")).params()
    assert params == {
        "protect_superusers": False, "protect_roles": ["ops"], "protect_apps": [], "protect_dbs": ["billing"],
        "own_user": "state_role", "own_db": "state_db", "own_app": "pgsessions-state",
    }
    assert SignalGuard(Protect()).params()["own_user"] is None


# --- the policy answers ------------------------------------------------------------------------------------


def test_the_policy_answers_offering_from_signalling_protect_and_the_bots_role():
    off = Policy(config(access={"allow_kill": False}), Lookup())
    assert off.session_refusal("prod", session()) == "signalling is turned off for `prod` (access.allow_kill: false)"
    p = Policy(config(protect={"applications": ["backup"]}), Lookup(),
               own_state=lambda: ("state_role", "state_db", "pgsessions-state"))
    assert p.session_refusal("prod", session()) is None
    assert p.session_refusal("prod", session(application="backup")) == \
        "protected: application backup (protect.applications)"
    assert p.session_refusal("prod", session(cannot_signal="the bot's role is not a member of pg_signal_backend")) \
        == "the bot's role is not a member of pg_signal_backend"
    assert p.protected("prod", session(user="state_role", database="state_db", application="pgsessions-state")) \
        == OWN_STATE_REASON
    assert p.session_refusal("dev", session(application="backup")) is None, "protect of another environment"


def test_the_policy_refuses_a_button_whose_session_a_rule_names_now():
    p = Policy(config(protect={"roles": ["ops"]}), Lookup())
    target = SessionTarget(pid=9, user="ops", application="x", database="d")
    assert p.protected_target("prod", target) == "pid 9 is protected: role ops (protect.roles): it is never signalled"
    assert p.protected_target("prod", SessionTarget(pid=9, user="web")) is None


def test_the_policy_reads_the_state_store_identity_once_and_survives_a_store_that_is_down():
    calls = []

    def own():
        calls.append(1)
        if len(calls) == 1:
            raise OSError("state store down")
        return ("r", "d", "a")

    p = Policy(config(), Lookup(), own_state=own)
    assert p.own() is None
    assert p.own() == OwnConnection("r", "d", "a") and p.own() == OwnConnection("r", "d", "a")
    assert len(calls) == 2
    n, hidden = p.without_ignored("prod", [session()])
    assert hidden == 0 and len(n) == 1


# --- what the rows say -----------------------------------------------------------------------------------


def test_a_protected_row_says_why_and_has_no_signal_button_and_names_are_escaped():
    p = Policy(config(protect={"roles": [HOSTILE]}), Lookup())
    (s,) = p.mark("prod", [session(5, user=HOSTILE)])
    blocks = session_buttons(s, token=None, details_token="dtok")
    body = json.dumps(blocks)
    assert "pid 5 cannot be signalled from chat: protected: role" in body
    assert "<!channel>" not in body and "Terminate" not in body and "Details 5" in body


def test_the_app_sweep_says_how_many_protected_sessions_it_leaves_out():
    refs = [SessionRef(pid=1, user="app", application="web", state="idle", backend_start="2026-12-01T10:00:00+00:00")]
    text = json.dumps(bulk_offer_blocks(category="idle", app="web", token="t", sessions=refs, drawn=2, protected=1))
    assert "1 listed session is protected (`protect`) and left out" in text and "Terminate these 1" in text
    none_left = json.dumps(bulk_offer_blocks(category="idle", app="web", token=None, sessions=[], drawn=2, protected=2))
    assert "*Terminate these N* is not offered: 2 listed sessions are protected" in none_left
    assert bulk_offer_blocks(category="idle", app="web", token=None, sessions=[], drawn=0) == []


def test_a_bulk_verdict_of_protect_is_a_skip_that_says_which_rule():
    row = SimpleNamespace(verdict="protected_rule", state="idle", state_secs=1.0, signalled=None)
    assert verdict_detail(row, "idle", "protected: role ops (protect.roles)") == (
        "skipped", "protected: role ops (protect.roles): never terminated")
    assert verdict_detail(row, "idle")[0] == "skipped"
