"""Every decision path of Workflow.submit / decide / execute and the housekeeping, in milliseconds.

A real SQLite state store in a temporary directory, a stub approvers lookup (no Slack), a stub
executor (no PostgreSQL): what is tested is the state machine and the access policy, in their order.
"""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
from sqlalchemy import text as sqltext

from bot.approval.actions import ACTIONS
from bot.approval.models import (
    BulkTarget,
    OutcomeStatus,
    Request,
    RequestState,
    SessionRef,
    SessionTarget,
    SignalOutcome,
)
from bot.approval.policy import Policy
from bot.approval.ports import Execution, Principals, UserFacts
from bot.approval.workflow import Workflow
from bot.config import Config
from bot.state.store import StateStore

pytestmark = pytest.mark.unit


class Approvers:
    """A stub ApproversLookup: user groups by id, guests by id; records every lookup."""

    def __init__(self, groups: dict[str, set[str]] | None = None):
        self.groups = groups or {}
        self.guests: set[str] = set()
        self.calls: list[tuple[str, tuple[str, ...]]] = []

    def allowed(self, user_id: str, principals: list[str]) -> bool:
        return self.resolve(principals).allows(user_id)

    def resolve(self, principals: list[str]) -> Principals:
        self.calls.append(("resolve", tuple(principals)))
        return Principals(tuple(principals), {g: frozenset(m) for g, m in self.groups.items()})

    def user_facts(self, user_id: str) -> UserFacts:
        self.calls.append(("user_facts", (user_id,)))
        return UserFacts(user_id, "T1", guest=user_id in self.guests, external=False)

    def cached_user_facts(self, user_id: str) -> UserFacts | None:
        return UserFacts(user_id, "T1", guest=user_id in self.guests, external=False)


class Events:
    def __init__(self) -> None:
        self.changed_ids: list[str] = []

    def changed(self, request: Request) -> None:
        self.changed_ids.append(request.id)


def make_config(tmp_path, **access) -> Config:
    base = {"approvers": ["U2", "S0DBAS"], "request_ttl": 900, "max_bulk": 3}
    return Config.model_validate({
        "state": f"sqlite:///{tmp_path / 'state.db'}",
        "environments": {
            "prod": {"dsn": "host=127.0.0.1 port=9 dbname=x", "access": {**base, **access}},
            "other": {"dsn": "host=127.0.0.1 port=9 dbname=x", "access": {"approvers": ["U2"], "channels": ["C9"]}},
        },
    })


class World:
    def __init__(self, tmp_path, groups=None, **access):
        self.config = make_config(tmp_path, **access)
        self.store = StateStore(self.config.state)
        self.approvers = Approvers(groups)
        self.events = Events()
        self.executed: list[Request] = []
        self.outcome = SignalOutcome(status=OutcomeStatus.DONE, detail="backend 42 terminated", signalled=True)

        def executor(ex: Execution, req: Request) -> SignalOutcome:
            self.executed.append(req)
            if isinstance(self.outcome, Exception):
                raise self.outcome
            return self.outcome

        actions = {name: replace(kind, executor=executor) for name, kind in ACTIONS.items()}
        self.policy = Policy(self.config, self.approvers)
        self.wf = Workflow(self.config, self.store, None, self.policy, self.events, actions=actions,  # type: ignore[arg-type]
                           interrupted_after=60)

    def token(self, target=None, env="prod", channel="C1") -> str:
        target = target or SessionTarget(pid=42, backend_start="2026-11-25T10:00:00.123456+00:00", user="app",
                                         query="SELECT 1")
        return self.store.put_targets(env, "primary", channel, "U1", [target])[0]

    def request(self, action="terminate", user="U1", **kw) -> Request:
        result = self.wf.submit(self.token(**kw), action, user, "C1", "stuck")
        assert result.ok, result.message
        assert result.request is not None
        return result.request


@pytest.fixture
def world(tmp_path):
    w = World(tmp_path)
    yield w
    w.store.close()


# --- submitting -----------------------------------------------------------------------------------


def test_submit_creates_a_pending_request_and_audits_it(world):
    req = world.request()
    assert req.state is RequestState.PENDING and req.requester == "U1" and req.reason == "stuck"
    assert req.session is not None and req.session.pid == 42
    assert req.session.backend_start == "2026-11-25T10:00:00.123456+00:00"
    assert [e["event"] for e in world.store.audit_entries(request_id=req.id)] == ["terminate:requested"]


@pytest.mark.parametrize(
    ("token", "action", "channel", "why"),
    [
        ("nope", "terminate", "C1", "not known to the bot"),
        (None, "terminate", "C7", "belongs to a message in another channel"),
        (None, "terminate_bulk", "C1", "is not an action for a session"),
        (None, "launch", "C1", "is not an action for a session"),
    ],
)
def test_submit_refuses_bad_buttons(world, token, action, channel, why):
    result = world.wf.submit(token or world.token(), action, "U1", channel, "r")
    assert not result.ok and why in result.message
    assert not world.store.requests_in((RequestState.PENDING,))


def test_cancel_is_refused_for_a_session_idle_in_transaction(world):
    token = world.token(SessionTarget(pid=1, backend_start="2026-01-01T00:00:00.000001+00:00",
                                      idle_in_transaction=True))
    result = world.wf.submit(token, "cancel", "U1", "C1", "r")
    assert not result.ok and "use Terminate" in result.message
    assert world.wf.submit(token, "terminate", "U1", "C1", "r").ok


def test_bulk_tokens_serve_only_the_actions_they_were_issued_for(world):
    target = BulkTarget(actions=("terminate_bulk",), app="web", sessions=(SessionRef(pid=1), SessionRef(pid=2)))
    token = world.token(target)
    assert "not what this button was issued for" in world.wf.submit(token, "clear_db", "U1", "C1", "r").message
    assert "not what this button was issued for" in world.wf.submit(token, "terminate", "U1", "C1", "r").message
    assert world.wf.submit(token, "terminate_bulk", "U1", "C1", "r").ok


def test_a_bulk_request_over_max_bulk_is_refused(world):
    target = BulkTarget(actions=("terminate_bulk",), sessions=tuple(SessionRef(pid=p) for p in range(4)))
    result = world.wf.submit(world.token(target), "terminate_bulk", "U1", "C1", "r")
    assert not result.ok
    assert result.message == "this request covers 4 sessions, more than access.max_bulk (3); narrow it down"


def test_a_reason_is_required_unless_configured_otherwise(world, tmp_path):
    assert world.wf.submit(world.token(), "terminate", "U1", "C1", "  ").message == "a reason is required"
    (tmp_path / "relaxed").mkdir()
    relaxed = World(tmp_path / "relaxed", require_reason=False)
    try:
        assert relaxed.wf.submit(relaxed.token(), "terminate", "U1", "C1", "").ok
    finally:
        relaxed.store.close()


@pytest.mark.parametrize(
    ("access", "why"),
    [
        ({"allow_kill": False}, "signalling is turned off for `prod` (access.allow_kill: false)"),
        ({"requesters": ["U5"]}, "you are not allowed to request kills in `prod` (access.requesters)"),
        ({"approvers": []}, "no approvers are configured for `prod`: set environments.prod.access.approvers"),
        ({"channels": ["C9"]}, "`prod` can only be used in <#C9>"),
    ],
)
def test_the_policy_refuses_requests(tmp_path, access, why):
    w = World(tmp_path, **access)
    try:
        result = w.wf.submit(w.token(), "terminate", "U1", "C1", "r")
        assert not result.ok and result.message == why
    finally:
        w.store.close()


def test_requests_go_to_the_approval_channel_when_one_is_configured(tmp_path):
    w = World(tmp_path, approval_channel="C0APPROVE")
    try:
        assert w.request().channel == "C0APPROVE"
    finally:
        w.store.close()


# --- deciding -------------------------------------------------------------------------------------


def test_unknown_verdicts_and_requests_are_refused(world):
    assert world.wf.decide("x", "U2", "maybe").message == "unknown decision `maybe`"
    result = world.wf.decide("does-not-exist", "U2", "approve")
    assert not result.ok and "does not exist" in result.message


def test_approve_moves_to_executing_then_execute_records_the_outcome(world):
    req = world.request()
    result = world.wf.decide(req.id, "U2", "approve")
    assert result.ok and result.execute and result.request.state is RequestState.EXECUTING
    assert result.request.decided_by == "U2"
    done = world.wf.execute(result.request)
    assert done.request.state is RequestState.DONE and done.message == "backend 42 terminated"
    assert done.request.outcome == world.outcome
    assert [r.id for r in world.executed] == [req.id]
    events = [e["event"] for e in world.store.audit_entries(request_id=req.id)]
    assert "terminate:approved" in events


def test_an_approval_enters_the_state_store_only_as_it_must(world, monkeypatch):
    """The click that completes a request (issue 22): one read of the request with its approvals before the
    transaction (Slack is asked between them), then one transaction that locks the request, records the
    approval with its audit line and moves the request (the row it returns is the request: no re-read);
    acting claims the request and writes the outcome once, which again returns the request."""
    req = world.request()
    entered: list[str] = []  # calls into the store from outside it
    depth = [0]

    def counted(name, method):
        def call(*a, **kw):
            if not depth[0]:
                entered.append(name)
            depth[0] += 1
            try:
                return method(*a, **kw)
            finally:
                depth[0] -= 1
        return call

    for name in ("request_with_approvals", "get_request", "approvers_of", "read", "approve", "add_approval",
                 "audit_request", "add_audit", "transition", "touch_executing", "own_connection", "claim_once"):
        if hasattr(world.store, name):
            monkeypatch.setattr(world.store, name, counted(name, getattr(world.store, name)))
    tx = world.store.tx
    monkeypatch.setattr(world.store, "tx", lambda: (depth[0] or entered.append("tx"), tx())[1])  # a context manager
    result = world.wf.decide(req.id, "U2", "approve")
    assert result.execute and result.request.state is RequestState.EXECUTING
    assert entered == ["request_with_approvals", "tx", "get_request", "approve", "transition"]
    entered.clear()
    done = world.wf.execute(result.request)
    assert done.request.state is RequestState.DONE and done.request.outcome == world.outcome
    assert entered == ["touch_executing", "tx", "transition"]


def test_a_failed_or_raising_executor_ends_the_request_failed(world):
    world.outcome = SignalOutcome(status=OutcomeStatus.GONE, detail="session already ended")
    req = world.request()
    done = world.wf.execute(world.wf.decide(req.id, "U2", "approve").request)
    assert done.request.state is RequestState.FAILED and done.request.outcome.status is OutcomeStatus.GONE
    world.outcome = RuntimeError("boom")
    req = world.request()
    done = world.wf.execute(world.wf.decide(req.id, "U2", "approve").request)
    assert done.request.state is RequestState.FAILED
    assert done.request.outcome.detail == "the bot failed while acting (RuntimeError); see logs"


def test_the_requester_cannot_approve_their_own_request(world):
    req = world.request()
    result = world.wf.decide(req.id, "U1", "approve")
    assert not result.ok and "another approver must decide it (access.self_approval is false)" in result.message
    assert world.store.get_request(req.id).state is RequestState.PENDING


def test_self_approval_when_configured(tmp_path):
    w = World(tmp_path, self_approval=True, approvers=["U1"])
    try:
        req = w.request()
        assert w.wf.decide(req.id, "U1", "approve").execute
    finally:
        w.store.close()


def test_only_approvers_approve_or_deny_and_groups_count(tmp_path):
    w = World(tmp_path, groups={"S0DBAS": {"U7"}})
    try:
        req = w.request()
        for verdict in ("approve", "deny"):
            result = w.wf.decide(req.id, "U3", verdict)
            assert not result.ok and result.message == "you are not an approver for `prod` (access.approvers)"
        assert w.wf.decide(req.id, "U7", "approve").execute  # through the user group
    finally:
        w.store.close()


def test_a_guest_may_not_decide_even_when_listed(tmp_path):
    w = World(tmp_path, approvers=["U2", "U3"])
    try:
        w.approvers.guests.add("U2")
        req = w.request()
        result = w.wf.decide(req.id, "U2", "approve")
        assert not result.ok and result.message == (
            "guest accounts may not approve or deny requests (only full members of this workspace); nothing was changed"
        )
        assert w.wf.decide(req.id, "U3", "approve").execute
    finally:
        w.store.close()


def test_an_approver_removed_from_the_config_no_longer_counts(tmp_path):
    w = World(tmp_path, approvals_required=2, approvers=["U2", "U3", "U4"])
    try:
        req = w.request()
        assert w.wf.decide(req.id, "U2", "approve").message == "approval 1 of 2 recorded"
        w.config.environments["prod"].access.approvers.remove("U2")
        result = w.wf.decide(req.id, "U3", "approve")
        assert result.ok and result.tell and not result.execute
        assert result.message == "approval 1 of 2 recorded (no longer counted: <@U2>, not approvers any more)"
        assert w.wf.decide(req.id, "U4", "approve").execute
    finally:
        w.store.close()


def test_deny_and_withdraw_close_the_request(world):
    req = world.request()
    denied = world.wf.decide(req.id, "U2", "deny")
    assert denied.ok and denied.request.state is RequestState.DENIED and denied.request.decided_by == "U2"
    again = world.wf.decide(req.id, "U2", "approve")
    assert not again.ok and again.message == "this request is already denied by <@U2>; nothing was changed"
    req = world.request()
    assert world.wf.decide(req.id, "U2", "withdraw").message == "only the person who made the request can withdraw it"
    withdrawn = world.wf.decide(req.id, "U1", "withdraw")
    assert withdrawn.request.state is RequestState.WITHDRAWN
    assert not world.executed


def test_withdrawing_asks_nobody_about_approvers(world):
    req = world.request()
    world.approvers.calls.clear()
    world.wf.decide(req.id, "U1", "withdraw")
    assert world.approvers.calls == []


def test_an_expired_request_is_expired_by_the_click_that_finds_it(world):
    req = world.request()
    with world.store.tx() as c:
        c.execute(sqltext("UPDATE pgs_requests SET expires_at = 0 WHERE id = :id"), {"id": req.id})
    result = world.wf.decide(req.id, "U2", "approve")
    assert not result.ok and result.changed and result.message == "this request has expired; nothing was changed"
    assert result.request.state is RequestState.EXPIRED
    assert not world.executed


def test_two_approvals_when_two_are_required(tmp_path):
    w = World(tmp_path, approvals_required=2, approvers=["U2", "U3"])
    try:
        req = w.request()
        first = w.wf.decide(req.id, "U2", "approve")
        assert first.ok and not first.execute and first.message == "approval 1 of 2 recorded"
        twice = w.wf.decide(req.id, "U2", "approve")
        assert not twice.ok and "already approved" in twice.message
        second = w.wf.decide(req.id, "U3", "approve")
        # decided_by names the approval that completed the request; every approval is in the table
        assert second.execute and second.request.decided_by == "U3"
        assert w.store.approvers_of(req.id) == ["U2", "U3"]
    finally:
        w.store.close()


def test_a_request_of_an_environment_no_longer_configured(world, tmp_path):
    req = world.request()
    world.config.environments.pop("prod")
    result = world.wf.decide(req.id, "U2", "approve")
    assert not result.ok and result.message == "environment `prod` is no longer configured; nothing was changed"


# --- housekeeping ---------------------------------------------------------------------------------


def test_expire_due_and_recover_interrupted(world):
    pending = world.request()
    executing = world.wf.decide(world.request().id, "U2", "approve").request
    with world.store.tx() as c:
        c.execute(sqltext("UPDATE pgs_requests SET expires_at = 0 WHERE id = :id"), {"id": pending.id})
    assert [r.id for r in world.wf.expire_due()] == [pending.id]
    assert world.wf.expire_due() == []
    assert world.wf.recover_interrupted() == []  # younger than interrupted_after: maybe still running
    recovered = world.wf.recover_interrupted(older_than=-1)
    assert [r.id for r in recovered] == [executing.id]
    assert recovered[0].state is RequestState.FAILED and recovered[0].outcome.status is OutcomeStatus.INTERRUPTED
    assert not world.executed, "an interrupted request is never executed again"


# --- seeing ---------------------------------------------------------------------------------------


def test_may_see_and_channel_refusal(world):
    p = world.policy
    assert p.may_see(None, "C1") and p.may_see("prod", "C1")
    assert not p.may_see("other", "C1") and p.may_see("other", "C9")
    assert not p.may_see("gone", "C1")
    assert p.channel_refusal("other", "C1") == "`other` can only be used in <#C9>"
    assert p.may_be_offered("prod", 3) is None
    assert p.may_be_offered("prod", 4) == "4 sessions are more than `access.max_bulk` (3) allows in one request"


def test_stored_rows_of_the_previous_release_still_decode(world):
    """Targets and outcomes written before the typed models had no ``kind``: the store fills it in."""
    req = world.request()
    with world.store.tx() as c:
        c.execute(sqltext("UPDATE pgs_requests SET target = :t, outcome = :o, state = 'done' WHERE id = :id"),
                  {"id": req.id, "t": '{"pid": 42, "backend_start": "2026-11-25T10:00:00.123456+00:00"}',
                   "o": '{"status": "done", "detail": "ok", "signalled": true}'})
    again = world.store.get_request(req.id)
    assert isinstance(again.target, SessionTarget) and again.outcome.signalled and again.state is RequestState.DONE
    assert time.time() - again.created_at < 60
