"""Viewing is gated like acting (issue 23 §13): under the default ``viewers: ["*"]`` guests and people from
another organisation (also a user record without a team) see no query texts, no Details, no requests and
no audit; full members see them all. Through signed Slack requests, on real PostgreSQL."""

from __future__ import annotations

import json
import uuid

import pytest

from bot.approval.policy import Policy
from bot.approval.ports import DirectoryUnavailable, Principals, UserFacts
from bot.config import Config
from bot.postgres.models import QUERY_HIDDEN
from tests.harness.bot import BotUnderTest, env_config
from tests.harness.flows import answer_with, find_button, post_listing
from tests.harness.waiting import wait_until

GUEST, OTHER_ORG, NO_TEAM, MEMBER = "U9", "U10", "U12", "U1"


def test_guests_and_other_organisations_see_no_query_text_details_requests_or_audit(pg, fake_slack):
    fake_slack.users = {GUEST: {"is_restricted": True}, OTHER_ORG: {"team_id": "T999"}, NO_TEAM: {"team_id": None}}
    app = "viewing-" + uuid.uuid4().hex[:6]
    secret = "Zq9view" + uuid.uuid4().hex[:6]
    conn = pg.primary.connect(user="app_user", dbname="appdb", application_name=app)
    try:
        conn.execute(f"SELECT '{secret}' AS x")
        pid = conn.info.backend_pid
        with BotUnderTest({"environments": {"test": env_config(pg)}}, fake_slack) as bot:
            # control: a full member sees the query text and may open Details
            shown = post_listing(bot, f"test --app {app} --min 0s", user=MEMBER)
            assert secret in json.dumps(shown.blocks)
            for user, why in ((GUEST, "guest accounts may not"), (OTHER_ORG, "another organisation or workspace may not"),
                              (NO_TEAM, "another organisation or workspace may not")):
                msg = post_listing(bot, f"test --app {app} --min 0s", user=user)
                body = json.dumps(msg.blocks) + msg.text
                assert f"pid {pid}" in body and secret not in body and QUERY_HIDDEN in body
                n_open = len(fake_slack.calls_for("views.open"))
                button = find_button(msg, f"Details {pid}")
                assert button is not None
                bot.slack.block_action(button["action_id"], button["value"], user_id=user, message=msg)
                answer_with(fake_slack, f"{why} see Details")
                assert len(fake_slack.calls_for("views.open")) == n_open, "no Details modal opened"
                for command, what in (("audit test", "see the audit"), ("pending", "see requests")):
                    n = len(fake_slack.responses)
                    bot.slack.slash(command, user_id=user, channel_id="C1")
                    answer = wait_until(lambda n=n: [r for r in fake_slack.responses[n:] if r.text], 10, command)[0]
                    assert why in answer.text and what in answer.text, answer.text
            # the member still reads the audit
            n = len(fake_slack.responses)
            bot.slack.slash("audit test", user_id=MEMBER, channel_id="C1")
            answer = wait_until(lambda: [r for r in fake_slack.responses[n:] if r.text], 10, "audit")[0]
            assert "Not possible" not in answer.text
        fake_slack.assert_clean()
    finally:
        conn.close()


class Lookup:
    def __init__(self, facts: dict[str, UserFacts] | None = None, down: bool = False):
        self.facts = facts or {}
        self.down = down

    def resolve(self, principals):
        return Principals(tuple(principals), {})

    def allowed(self, user_id, principals):
        return self.resolve(principals).allows(user_id)

    def user_facts(self, user_id):
        if self.down:
            raise DirectoryUnavailable("Slack could not be asked who this is")
        return self.facts.get(user_id, UserFacts(user_id, "T1", guest=False, external=False))

    def cached_user_facts(self, user_id):
        return None


@pytest.mark.unit
def test_viewing_rules():
    config = Config.model_validate({"environments": {"prod": {"dsn": "host=x"}}})  # viewers: ["*"] by default
    facts = {GUEST: UserFacts(GUEST, "T1", guest=True, external=False),
             OTHER_ORG: UserFacts(OTHER_ORG, "T9", guest=False, external=True)}
    p = Policy(config, Lookup(facts))
    assert p.identity_view_refusal(MEMBER, "Details") is None and p.may_view("prod", MEMBER, "C1")
    assert p.identity_view_refusal(GUEST, "Details") == (
        "guest accounts may not see Details (only full members of this workspace)")
    assert "another organisation" in (p.identity_view_refusal(OTHER_ORG, "the audit") or "")
    assert not p.may_view("prod", GUEST, "C1") and not p.may_view("prod", OTHER_ORG, "C1")
    assert p.viewer_refusal("prod", GUEST) is None  # listings stay visible (without query texts)
    assert p.identity_view_refusal("", "Details") is not None
    down = Policy(config, Lookup(down=True))
    assert down.identity_view_refusal(MEMBER, "Details") == "Slack could not be asked who this is"  # fails closed


@pytest.mark.unit
def test_a_user_record_without_a_team_is_external():
    from bot.slack.directory import Directory

    class Client:
        def __init__(self, user: dict):
            self.user = user

        def users_info(self, user: str) -> dict:
            return {"user": {"id": user, **self.user}}

    assert Directory(Client({}), team_id="T1").user_facts("U1").external  # type: ignore[arg-type]
    assert Directory(Client({"team_id": None}), team_id="T1").user_facts("U1").external  # type: ignore[arg-type]
    assert not Directory(Client({"team_id": "T1"}), team_id="T1").user_facts("U1").external  # type: ignore[arg-type]
    assert Directory(Client({"team_id": "T2"}), team_id="T1").user_facts("U1").external  # type: ignore[arg-type]
