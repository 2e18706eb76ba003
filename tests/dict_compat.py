"""The renderer tests' plain-dict fixtures, turned into the typed approval models the renderers take.

The renderer tests describe requests, targets and outcomes as dicts (short to write, easy to vary with
hypothesis); these wrappers build the real models (bot/approval/models.py) from them and call the
real renderers, with the kind of action from the real table of actions. Missing required fields get
neutral defaults (a session without a pid is pid 0; an outcome without a status takes the one its
request's state implies).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from bot.approval.actions import ACTIONS
from bot.approval.models import (
    TARGET,
    Request,
    SessionRef,
    StoredTarget,
    request_from_dict,
    target_kind_of,
    with_kind,
)
from bot.render import approval as _approval
from bot.render import bulk as _bulk

VERBS = {name: (kind.label, kind.verb) for name, kind in ACTIONS.items()}
TITLES = {name: kind.title for name, kind in ACTIONS.items()}


def _session(d: Mapping[str, Any]) -> dict[str, Any]:
    return {"pid": 0, **d}


def _target(action: str, payload: Mapping[str, Any]) -> dict[str, Any]:
    t = dict(payload)
    if "sessions" in t:
        t["sessions"] = [_session(s) for s in t["sessions"] or []]
    kind = target_kind_of(action)
    if kind == "database":
        t.setdefault("database", "?")
    return _session(t) if kind == "session" else t


def as_request(d: Mapping[str, Any]) -> Request:
    data = dict(d)
    data.setdefault("id", "r1")
    data.setdefault("state", "pending")
    data.setdefault("updated_at", data.get("created_at", 0.0))
    data["target"] = _target(data["action"], data["target"])
    out = data.get("outcome")
    if out:
        out = dict(out)
        implied = {"executing": "running", "done": "done"}.get(data["state"], "failed")
        out.setdefault("status", "running" if "progress" in out and data["state"] == "executing" else implied)
        if "progress" in out:
            out["progress"] = {"total": 0, "handled": 0, **out["progress"]}
        data["outcome"] = out
    return request_from_dict(data)


def as_stored(target: Mapping[str, Any], action: str, token: str = "tok") -> StoredTarget:
    payload = with_kind(_target(action, target["payload"]), target_kind_of(action))
    return StoredTarget(token=token, env=target["env"], host=target["host"], created_at=0.0,
                        target=TARGET.validate_python(payload))


def as_refs(sessions: Iterable[Mapping[str, Any]]) -> list[SessionRef]:
    return [SessionRef.model_validate(_session(s)) for s in sessions]


def request_modal(target: Mapping[str, Any], action: str, token: str, channel: str | None,
                  require_reason: bool) -> dict:
    return _approval.request_modal(as_stored(target, action, token), ACTIONS[action], token, channel, require_reason)


def request_message(req: Mapping[str, Any], _approvers: list[str], approvals: list[str], required: int,
                    cfg_approvers: list[str]) -> dict:
    return _approval.request_message(as_request(req), ACTIONS[req["action"]], approvals, required, cfg_approvers)


def pending_list(reqs: Iterable[Mapping[str, Any]], now: float) -> dict:
    return _approval.pending_list([as_request({"state": "pending", **r}) for r in reqs], now)


def bulk_modal(target: Mapping[str, Any], action: str, token: str, channel: str | None, require_reason: bool) -> dict:
    return _bulk.bulk_modal(as_stored(target, action, token), ACTIONS[action], token, channel, require_reason)


def bulk_request_message(req: Mapping[str, Any], _approvers: list[str], approvals: list[str], required: int,
                         cfg_approvers: list[str]) -> dict:
    return _bulk.bulk_request_message(as_request(req), ACTIONS[req["action"]], approvals, required, cfg_approvers)


def bulk_offer_blocks(*, sessions: Iterable[Mapping[str, Any]], **kw: Any) -> list[dict]:
    return _bulk.bulk_offer_blocks(sessions=as_refs(sessions), **kw)


def group_lines(sessions: Iterable[Mapping[str, Any]], **kw: Any) -> list[str]:
    return _bulk.group_lines(as_refs(sessions), **kw)
