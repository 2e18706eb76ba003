"""The access policy's rules (bot/approval/policy.py), each on its own: no Slack, no store, no server."""

from __future__ import annotations

import pytest

from bot.approval.models import RequestState, request_from_dict
from bot.approval.policy import Authority, Policy
from bot.approval.ports import DirectoryUnavailable, Principals, UserFacts
from bot.config import Config

pytestmark = pytest.mark.unit


class Lookup:
    def __init__(self, groups=None, guests=(), down=False):
        self.groups = groups or {}
        self.guests = set(guests)
        self.down = down

    def resolve(self, principals):
        if self.down:
            raise DirectoryUnavailable("Slack could not be asked who is in a user group")
        return Principals(tuple(principals), {g: frozenset(m) for g, m in self.groups.items()})

    def allowed(self, user_id, principals):
        return self.resolve(principals).allows(user_id)

    def user_facts(self, user_id):
        if self.down:
            raise DirectoryUnavailable("Slack could not be asked who this is")
        return UserFacts(user_id, "T1", guest=user_id in self.guests, external=False)

    def cached_user_facts(self, user_id):
        return None if self.down else UserFacts(user_id, "T1", guest=user_id in self.guests, external=False)


def config(**access):
    base = {"approvers": ["S0DBAS"], "channels": ["C1"], "max_bulk": 3}
    return Config.model_validate({"environments": {"prod": {"dsn": "host=x", "access": {**base, **access}}}})


def request(**kw):
    data = {"id": "r1", "env": "prod", "host": "primary", "action": "terminate", "requester": "U1",
            "state": "pending", "created_at": 1.0, "expires_at": 2.0, "updated_at": 1.0, "channel": "C1",
            "target": {"pid": 7, "requested_in": "C1"}}
    return request_from_dict({**data, **kw})


def test_offering_and_seeing():
    p = Policy(config(), Lookup())
    assert p.may_be_offered("prod") is None and p.may_be_offered("prod", 3) is None
    assert p.may_be_offered("prod", 4) == "4 sessions are more than `access.max_bulk` (3) allows in one request"
    off = Policy(config(allow_kill=False), Lookup())
    assert off.may_be_offered("prod") == "signalling is turned off for `prod` (access.allow_kill: false)"
    assert p.may_see("prod", "C1") and not p.may_see("prod", "C2") and not p.may_see("nope", "C1")
    assert p.channel_refusal("prod", "C2") == "`prod` can only be used in <#C1>"


def test_viewers_fail_closed_when_slack_cannot_say():
    p = Policy(config(viewers=["S0VIEW"]), Lookup(groups={"S0VIEW": {"U5"}}))
    assert p.viewer_refusal("prod", "U5") is None
    assert p.viewer_refusal("prod", "U6") == "you are not allowed to see sessions of `prod` (access.viewers)"
    assert not p.viewers_decidable_offline("prod") and Policy(config(), Lookup()).viewers_decidable_offline("prod")
    down = Policy(config(viewers=["S0VIEW"]), Lookup(down=True))
    assert down.viewer_refusal("prod", "U5") == "Slack could not be asked who is in a user group"


def test_requesting_refuses_guests_and_fails_closed():
    assert Policy(config(), Lookup(guests={"U1"})).may_request("prod", "U1", "C1") == (
        "guest accounts may not request (only full members of this workspace)"
    )
    assert Policy(config(), Lookup(down=True)).may_request("prod", "U1", "C1") == (
        "Slack could not be asked who is in a user group"
    )
    assert Policy(config(), Lookup()).may_request("prod", "U1", "C1") is None


def test_a_request_that_may_no_longer_go_ahead():
    p = Policy(config(), Lookup(groups={"S0DBAS": {"U2"}}))
    everyone = Authority(Principals(("S0DBAS",), {"S0DBAS": frozenset({"U2"})}), Principals(("*",), {}), None, {})
    assert p.request_refusal(request(), everyone) is None
    moved = request(target={"pid": 7, "requested_in": "C9"})
    assert p.request_refusal(moved, everyone) == "`prod` may no longer be used from <#C9> (access.channels)"
    only_u5 = Authority(everyone.approvers, Principals(("U5",), {}), None, {})
    assert p.request_refusal(request(), only_u5) == (
        "<@U1> is no longer allowed to request kills in `prod` (access.requesters)"
    )
    guest = Authority(everyone.approvers, everyone.requesters, None, {"U1": "guest accounts may not request"})
    assert p.request_refusal(request(), guest) == "the requester may not ask for this: guest accounts may not request"


def test_which_approvals_count():
    p = Policy(config(), Lookup(groups={"S0DBAS": {"U2", "U3"}}, guests={"U3"}))
    req = request()
    authority = p.authority(req, "U2", ["U2", "U3"])
    assert p.counts("U2", req, False, authority) and not p.counts("U3", req, False, authority)
    assert not p.counts("U1", req, False, authority), "the requester never counts without self_approval"
    assert p.counted_approvals(req, ["U2", "U3"], ["U2", "U3"]) == (["U2"], ["U3"])
    done = request(state=RequestState.DONE.value)
    assert p.counted_approvals(done, ["U2", "U3"], []) == (["U2", "U3"], []), "only a pending request is recounted"
    down = Policy(config(), Lookup(down=True))
    assert down.counted_approvals(req, ["U2"], ["U2"]) == (["U2"], []), "Slack down: shown as recorded"
    assert down.refusal_before_acting(req) == "Slack could not be asked who is in a user group"
