"""The typed records of the approval workflow: requests, their targets and their outcomes.

They are frozen pydantic models because the state store keeps them as JSON: the store converts at its
boundary (:mod:`bot.state.store`), and nothing above it reads a request, a target or an outcome by
string key. Rows written by earlier releases have no ``kind`` field in their target and outcome JSON;
the store fills it in from the request's action (:func:`target_kind_of`, :func:`outcome_kind_of`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from bot.approval.ids import SESSION_KINDS, TERMINATE_BULK
from bot.postgres.redact import redact


class Frozen(BaseModel):
    # extra="ignore": a field a later release adds to stored JSON must not break reading it back
    model_config = ConfigDict(frozen=True, extra="ignore")


class RequestState(StrEnum):
    PENDING = "pending"
    EXECUTING = "executing"
    DONE = "done"
    FAILED = "failed"
    DENIED = "denied"
    WITHDRAWN = "withdrawn"
    EXPIRED = "expired"


OPEN_STATES = (RequestState.PENDING,)
FINAL_STATES = (
    RequestState.DONE,
    RequestState.FAILED,
    RequestState.DENIED,
    RequestState.WITHDRAWN,
    RequestState.EXPIRED,
)


class Verdict(StrEnum):
    APPROVE = "approve"
    DENY = "deny"
    WITHDRAW = "withdraw"


def as_datetime(value: str | datetime | None) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value)


# --- targets --------------------------------------------------------------------------------------


class SessionRef(Frozen):
    """One backend as the approver saw it: identity (pid + backend_start at microsecond precision) and
    what was shown. Timestamps are ISO strings as PostgreSQL reported them (microseconds kept)."""

    pid: int
    backend_start: str | None = None
    user: str | None = None
    database: str | None = None
    application: str | None = None
    client_addr: str | None = None
    state: str | None = None
    query: str | None = None
    query_start: str | None = None
    xact_start: str | None = None
    state_change: str | None = None
    state_secs: float | None = None
    cannot_signal: str | None = None
    # bulk snapshots: the session was seen in use between the listing and the snapshot (never matches)
    changed_after_listing: bool = False
    in_transaction: bool | None = None

    @property
    def started(self) -> datetime:
        """backend_start as a datetime (every stored session has one; a bare pid raises)."""
        if self.backend_start is None:
            raise ValueError(f"session {self.pid} has no backend_start")
        return datetime.fromisoformat(self.backend_start)

    @property
    def key(self) -> tuple[int, datetime]:
        """(pid, backend_start): the identity an approval covers."""
        return self.pid, self.started


class PooledClientRef(Frozen):
    """The PgBouncer client linked to a server session when it was listed (issue 25): what Disconnect
    client acts on (``client_id``, re-checked with its address and port) and what Terminate will hit."""

    pooler: str
    pool: str | None = None
    pool_mode: str | None = None
    client_id: int | None = None  # PgBouncer 1.24+
    addr: str | None = None
    port: int | None = None
    application: str | None = None
    user: str | None = None
    database: str | None = None
    disconnect_refusal: str | None = None  # why Disconnect client is not offered (mrkdwn), None: it is


class SessionSnapshot(SessionRef):
    """One session as a listing showed it (what its buttons act on or read)."""

    categories: tuple[str, ...] = ()
    duration_what: str | None = None
    duration_secs: float | None = None
    idle_in_transaction: bool = False
    listed_at: float | None = None  # when the listing read it (epoch seconds)
    requested_in: str | None = None  # the channel a request for it was made from
    actions: tuple[str, ...] | None = None  # the actions its buttons were drawn with (None: any)
    pooled: PooledClientRef | None = None  # opened by a pooler: its client linked when listed (issue 25)


class SessionTarget(SessionSnapshot):
    """A single session (Cancel / Terminate buttons)."""

    kind: Literal["session"] = "session"


class DetailsTarget(SessionSnapshot):
    """A session's Details button: lets its holder read that session (pid + backend_start), nothing else."""

    kind: Literal["details"] = "details"


class BulkTarget(Frozen):
    """*Terminate these N* under an ``idle`` / ``idle-tx --app`` listing: the exact sessions shown."""

    kind: Literal["bulk"] = "bulk"
    actions: tuple[str, ...] = ()
    category: str | None = None
    state_like: str | None = None
    filters: str | None = None
    app: str | None = None
    user: str | None = None
    database: str | None = None
    min_seconds: float | None = None
    listed_at: float | None = None
    sessions: tuple[SessionRef, ...] = ()
    requested_in: str | None = None


class DatabaseTarget(Frozen):
    """``clear-db``: a database (by name and oid) and the sessions connected to it when it was listed."""

    kind: Literal["database"] = "database"
    actions: tuple[str, ...] = ()
    database: str
    oid: int | None = None
    owner: str | None = None
    listed_at: float | None = None
    sessions: tuple[SessionRef, ...] = ()
    source_request: str | None = None
    requested_in: str | None = None


Target = Annotated[SessionTarget | DetailsTarget | BulkTarget | DatabaseTarget, Field(discriminator="kind")]
TargetKind = Literal["session", "details", "bulk", "database"]
TARGET_KINDS: tuple[TargetKind, ...] = ("session", "details", "bulk", "database")
TARGET = TypeAdapter(Target)


class StoredTarget(Frozen):
    """What a button token resolves to (table ``pgs_targets``)."""

    token: str
    env: str
    host: str
    channel: str | None = None
    created_by: str | None = None
    created_at: float
    target: Target

    @property
    def kind(self) -> TargetKind:
        return self.target.kind


# --- outcomes -------------------------------------------------------------------------------------


class OutcomeStatus(StrEnum):
    DONE = "done"
    FAILED = "failed"
    PARTIAL = "partial"
    INTERRUPTED = "interrupted"
    UNAVAILABLE = "unavailable"
    RUNNING = "running"
    # single-session signals (bot.postgres.signals)
    GONE = "gone"
    MOVED = "moved"  # the session moved on from what was approved: nothing was signalled
    NOT_DONE = "not_done"
    REFUSED = "refused"


class Reopened(Frozen):
    request: str | None = None
    at: float | None = None
    by: str | None = None
    how: str | None = None


class Progress(Frozen):
    total: int
    handled: int
    counts: dict[str, int] = Field(default_factory=dict)


class ItemResult(Frozen):
    """One session of a bulk request that was not simply ended (listed in the approval message)."""

    pid: int
    user: str | None = None
    application: str | None = None
    result: str | None = None


class SignalOutcome(Frozen):
    """Cancel / Terminate of one session."""

    kind: Literal["signal"] = "signal"
    status: OutcomeStatus
    detail: str = ""
    signalled: bool = False


class BulkOutcome(Frozen):
    """Bulk terminate, clear-db (with or without blocking) and allow-connections."""

    kind: Literal["bulk"] = "bulk"
    status: OutcomeStatus
    detail: str = ""
    progress: Progress | None = None
    counts: dict[str, int] | None = None
    problems: tuple[ItemResult, ...] = ()
    skipped: tuple[ItemResult, ...] = ()
    finished_at: float | None = None
    duration_s: float | None = None
    total: int | None = None
    # the database side (clear-db, allow connections)
    database: str | None = None
    block: bool | None = None
    was_closed: bool | None = None
    blocked: bool | None = None
    closed_at: float | None = None
    allow_token: str | None = None
    arrived: int | None = None
    allow_connections: bool | None = None
    reopened: Reopened | None = None


Outcome = Annotated[SignalOutcome | BulkOutcome, Field(discriminator="kind")]
OutcomeKind = Literal["signal", "bulk"]
OUTCOME = TypeAdapter(Outcome)


# --- requests -------------------------------------------------------------------------------------


class NewRequest(Frozen):
    """What :meth:`bot.state.store.StateStore.create_request` needs."""

    env: str
    host: str
    action: str
    target_token: str | None
    target: Target
    requester: str
    reason: str | None
    channel: str | None
    expires_at: float


class Request(Frozen):
    id: str
    env: str
    host: str
    action: str
    target_token: str | None = None
    target: Target
    requester: str
    reason: str | None = None
    channel: str | None = None
    message_ts: str | None = None
    state: RequestState
    created_at: float
    expires_at: float
    decided_at: float | None = None
    decided_by: str | None = None
    outcome: Outcome | None = None
    updated_at: float

    @property
    def session(self) -> SessionTarget | None:
        """The one session of a Cancel / Terminate request, else None."""
        return self.target if isinstance(self.target, SessionTarget) else None

    @property
    def sessions(self) -> tuple[SessionRef, ...]:
        t = self.target
        return (t,) if isinstance(t, SessionSnapshot) else t.sessions

    @property
    def database(self) -> str | None:
        return self.target.database

    @property
    def bulk_outcome(self) -> BulkOutcome | None:
        return self.outcome if isinstance(self.outcome, BulkOutcome) else None


# --- reading what earlier releases stored ----------------------------------------------------------



def target_kind_of(action: str) -> TargetKind:
    if action in SESSION_KINDS:
        return "session"
    if action == TERMINATE_BULK:
        return "bulk"
    return "database"


def outcome_kind_of(action: str) -> OutcomeKind:
    return "signal" if action in SESSION_KINDS else "bulk"


def with_kind(data: Any, kind: str) -> Any:
    if isinstance(data, dict) and "kind" not in data:
        return {**data, "kind": kind}
    return data


def request_from_dict(data: Mapping[str, Any]) -> Request:
    """A request from its stored columns (target and outcome decoded from JSON, kinds filled in)."""
    d = dict(data)
    action = d["action"]
    d["target"] = with_kind(d["target"], target_kind_of(action))
    d["outcome"] = with_kind(d["outcome"], outcome_kind_of(action)) if d.get("outcome") else None
    return Request.model_validate(d)


def with_queries_redacted(req: Request) -> Request:
    """``req`` with every query text in its target redacted (:func:`bot.postgres.redact.redact`, idempotent):
    how a request of an environment with ``redact_queries`` is shown, also when it was stored before
    ``redact_queries`` was turned on."""
    t = req.target
    if isinstance(t, SessionSnapshot):
        if not t.query:
            return req
        return req.model_copy(update={"target": t.model_copy(update={"query": redact(t.query)})})
    if not any(s.query for s in t.sessions):
        return req
    sessions = tuple(s.model_copy(update={"query": redact(s.query)}) if s.query else s for s in t.sessions)
    return req.model_copy(update={"target": t.model_copy(update={"sessions": sessions})})
