"""The bot's own state: button tokens, kill requests, approvals, audit, lag incidents, leader lease.

One code path for both backends through SQLAlchemy Core: a SQLite file by default
(``state: sqlite:///path``) and PostgreSQL (``state: postgresql://...``) so that several replicas can
share it. Every state transition is a conditional UPDATE inside a transaction that first locks the
request row (``FOR UPDATE`` on PostgreSQL; SQLite write transactions start with ``BEGIN IMMEDIATE``), so
concurrent clicks serialise and exactly one of them wins.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import (
    and_,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Connection, Engine, RowMapping
from sqlalchemy.exc import IntegrityError

from bot.approval.models import (
    TARGET,
    TARGET_KINDS,
    NewRequest,
    Outcome,
    Request,
    RequestState,
    StoredTarget,
    Target,
    request_from_dict,
    with_kind,
)
from bot.state import audit as audit_records
from bot.state import migrate
from bot.state.engine import ClosingGate, create_state_engine
from bot.state.engine import _pg_connect_args as _pg_connect_args  # re-exported for the tests
from bot.state.engine import new_id as new_id  # re-exported: bot.state.incidents, bot.watch.incidents
from bot.state.schema import (  # noqa: F401 - re-exported: the tables are imported from here
    approvals,
    audit,
    incidents,
    leases,
    metadata,
    outcome_columns,
    requests,
    targets,
)

log = logging.getLogger(__name__)

OPEN_STATES = ("pending", "executing")
DERIVED_COLUMNS = tuple(outcome_columns(None))
# Requests in these states are finished: retention may purge them (never an open one).
FINISHED_STATES = ("done", "failed", "denied", "withdrawn", "expired")

# How long a signed Slack request (or a Socket Mode envelope) is remembered as served: Slack's signatures
# are good for 5 minutes, a claim is kept a minute longer (bot.slack.replays)
DELIVERY_WINDOW = 360.0


class StateStore:
    def __init__(self, url: str):
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        engine = create_state_engine(url)
        # Plain engine.connect() reads (deferred BEGIN on SQLite); tx() writes (BEGIN IMMEDIATE).
        self.engine: Engine = engine
        self._writer: Engine = engine.execution_options(pgs_write=True)
        self.schema_revisions: tuple[str | None, str | None] = (None, None)
        with self._writer.begin() as conn:
            self.schema_revisions = migrate.upgrade(conn)
        self.backfill_outcome_columns()
        self._gate = ClosingGate(engine)

    def close(self) -> None:
        self._gate.shut = True  # a job still running finds it closed instead of opening it again
        self.engine.dispose()

    @contextmanager
    def tx(self) -> Iterator[Connection]:
        """A write transaction (SQLite: ``BEGIN IMMEDIATE``)."""
        with self._writer.begin() as conn:
            yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only transaction: never takes SQLite's write lock, never waits for a writer."""
        with self.engine.connect() as conn:
            yield conn

    def check_writable(self) -> None:
        """Raise unless a write round-trip works (used by the self-check)."""
        with self.tx() as c:
            c.execute(insert(leases).values(name="__check__" + new_id(4), holder="check", expires_at=0))
            c.execute(delete(leases).where(leases.c.holder == "check"))

    # --- button tokens ------------------------------------------------------------------------------

    def put_targets(
        self, env: str, host: str, channel: str | None, user: str | None, targets_: list[Target]
    ) -> list[str]:
        """Store what each button may act on; returns one random token per target."""
        now = time.time()
        tokens = [new_id(9) for _ in targets_]
        if targets_:
            with self.tx() as c:
                c.execute(
                    insert(targets),
                    [
                        {
                            "token": t,
                            "kind": p.kind,
                            "env": env,
                            "host": host,
                            "channel": channel,
                            "created_by": user,
                            "created_at": now,
                            "payload": p.model_dump_json(exclude_none=True),
                        }
                        for t, p in zip(tokens, targets_, strict=True)
                    ],
                )
        return tokens

    def get_target(self, token: str) -> StoredTarget | None:
        """What a button token resolves to; None for an unknown token (or a key of another kind)."""
        with self.read() as c:
            row = c.execute(select(targets).where(targets.c.token == token)).mappings().first()
        if row is None or row["kind"] not in TARGET_KINDS:
            return None
        payload = with_kind(json.loads(row["payload"]), row["kind"])
        return StoredTarget(
            token=row["token"],
            env=row["env"],
            host=row["host"],
            channel=row["channel"],
            created_by=row["created_by"],
            created_at=row["created_at"],
            target=TARGET.validate_python(payload),
        )

    def claim_once(self, key: str, conn: Connection | None = None) -> bool:
        """Record that ``key`` (e.g. a modal submission) was acted on; False if it already was.

        Atomic on both backends (a primary-key insert), so a replayed or retried submission creates
        nothing twice. Kept in pgs_targets (kind 'once') and purged with the button tokens. With
        ``conn`` the marker is part of that transaction (a savepoint: a key already there answers
        False and leaves the transaction usable), so it lands exactly when what it guards lands.
        """
        row = {"token": key[:32], "kind": "once", "env": "-", "host": "-", "channel": None, "created_by": None,
               "created_at": time.time(), "payload": "{}"}
        if conn is not None:
            try:
                with conn.begin_nested():
                    conn.execute(insert(targets).values(**row))
            except IntegrityError:
                return False
            return True
        try:
            with self.tx() as c:
                c.execute(insert(targets).values(**row))
        except IntegrityError:
            return False
        return True

    def claim_delivery(self, key: str, window: float, now: float | None = None) -> bool:
        """True the first time ``key`` (a hash of one signed Slack request, or a Socket Mode envelope
        id) is claimed within ``window`` seconds, by any replica sharing this store; False for a replay.

        Kept in pgs_targets (kind 'replay'); a claim older than ``window`` no longer counts (Slack's
        signature check refuses requests older than 5 minutes anyway) and is purged by
        :meth:`purge_deliveries`."""
        now = time.time() if now is None else now
        token = key[:32]
        with self.tx() as c:
            seen = c.execute(
                select(targets.c.created_at).where(targets.c.token == token, targets.c.kind == "replay")
            ).first()
            if seen is not None and float(seen[0]) > now - window:
                return False
            if seen is not None:
                c.execute(delete(targets).where(targets.c.token == token, targets.c.kind == "replay"))
            try:
                with c.begin_nested():
                    c.execute(insert(targets).values(
                        token=token, kind="replay", env="-", host="-", channel=None, created_by=None,
                        created_at=now, payload="{}",
                    ))
            except IntegrityError:  # another replica claimed it at the same moment
                return False
        return True

    def purge_deliveries(self, older_than: float) -> int:
        """Forget replay claims older than ``older_than`` (epoch seconds)."""
        with self.tx() as c:
            return int(c.execute(
                delete(targets).where(targets.c.kind == "replay", targets.c.created_at < older_than)
            ).rowcount)

    def purge_targets(self, older_than: float) -> int:
        with self.tx() as c:
            return int(c.execute(delete(targets).where(targets.c.created_at < older_than)).rowcount)

    # --- requests -----------------------------------------------------------------------------------

    def create_request(self, new: NewRequest, conn: Connection | None = None) -> Request:
        """Store a new pending request (in ``conn``'s transaction when given, else in one of its own)."""
        if conn is None:
            with self.tx() as c:
                return self.create_request(new, conn=c)
        now = time.time()
        row = {
            **new.model_dump(exclude={"target"}),
            "id": new_id(9),
            "state": RequestState.PENDING.value,
            "created_at": now,
            "updated_at": now,
            "target": new.target.model_dump_json(exclude_none=True),
            **outcome_columns(None),
        }
        conn.execute(insert(requests).values(**row))
        created = self.get_request(row["id"], conn=conn)
        assert created is not None
        return created

    @staticmethod
    def _decode(row: RowMapping) -> Request:
        data = {k: v for k, v in row.items() if k not in DERIVED_COLUMNS}  # copies of outcome facts for queries
        data["target"] = json.loads(data["target"])
        data["outcome"] = json.loads(data["outcome"]) if data.get("outcome") else None
        return request_from_dict(data)

    def get_request(self, request_id: str, conn: Connection | None = None, lock: bool = False) -> Request | None:
        stmt = select(requests).where(requests.c.id == request_id)
        if lock and not self.is_sqlite:
            stmt = stmt.with_for_update()
        if conn is not None:
            row = conn.execute(stmt).mappings().first()
        else:
            with self.read() as c:
                row = c.execute(stmt).mappings().first()
        return self._decode(row) if row is not None else None

    def set_message(self, request_id: str, channel: str, ts: str) -> None:
        with self.tx() as c:
            c.execute(update(requests).where(requests.c.id == request_id).values(channel=channel, message_ts=ts))

    def transition(
        self,
        conn: Connection,
        request_id: str,
        expected: RequestState | tuple[RequestState, ...],
        new: RequestState,
        *,
        outcome: Outcome | None = None,
        decided_at: float | None = None,
        decided_by: str | None = None,
        stale_before: float | None = None,
        outcome_status: str | None = None,
    ) -> Request | None:
        """Move a request from ``expected`` to ``new``: the request as stored now (``UPDATE … RETURNING``),
        or None when another click got there first.

        ``outcome`` (when given) replaces the stored outcome and the real columns derived from it; a
        transition to the same state only records progress or a changed outcome. ``stale_before``: only
        if the request was last updated at or before then (an execution that is alive keeps updating it,
        :meth:`touch_executing`, and so wins against the recovery of interrupted requests). ``outcome_status``:
        only if the stored outcome has this status (an outcome kept in memory replaces "interrupted")."""
        exp = (expected,) if isinstance(expected, str) else expected  # a RequestState is a str
        values: dict[str, Any] = {"state": RequestState(new).value, "updated_at": time.time()}
        if outcome is not None:
            values["outcome"] = outcome.model_dump_json(exclude_none=True)
            values.update(outcome_columns(outcome.model_dump(mode="json", exclude_none=True)))
        if decided_at is not None:
            values["decided_at"] = decided_at
        if decided_by is not None:
            values["decided_by"] = decided_by
        where = [requests.c.id == request_id, requests.c.state.in_([RequestState(e).value for e in exp])]
        if stale_before is not None:
            where.append(requests.c.updated_at <= stale_before)
        if outcome_status is not None:
            where.append(requests.c.outcome_status == outcome_status)
        row = conn.execute(update(requests).where(*where).values(**values).returning(*requests.c)).mappings().first()
        return self._decode(row) if row is not None else None

    def touch_executing(self, request_id: str) -> bool:
        """Say that the execution of this request is alive (``updated_at`` = now); False when the request
        is not 'executing' any more (another path ended it: the caller must not act)."""
        with self.tx() as c:
            res = c.execute(
                update(requests)
                .where(requests.c.id == request_id, requests.c.state == RequestState.EXECUTING.value)
                .values(updated_at=time.time())
            )
        return int(res.rowcount) == 1

    def approve(self, conn: Connection, req: Request, approver: str) -> list[str] | None:
        """Record ``approver``'s approval of ``req`` with its audit line: who has approved it now (oldest
        first), or None when ``approver`` already had (nothing is written)."""
        if not self.add_approval(conn, req.id, approver):
            return None
        self.audit_request(req, "approved", approver, conn=conn)
        return self.approvers_of(req.id, conn=conn)

    def add_approval(self, conn: Connection, request_id: str, approver: str) -> bool:
        """Record one approval; False if this approver already approved."""
        exists = conn.execute(
            select(approvals.c.approver).where(approvals.c.request_id == request_id, approvals.c.approver == approver)
        ).first()
        if exists:
            return False
        try:
            with conn.begin_nested():
                conn.execute(insert(approvals).values(request_id=request_id, approver=approver, at=time.time()))
        except IntegrityError:
            return False
        return True

    def approvers_of(self, request_id: str, conn: Connection | None = None) -> list[str]:
        stmt = select(approvals.c.approver).where(approvals.c.request_id == request_id).order_by(approvals.c.at)
        if conn is not None:
            return [r[0] for r in conn.execute(stmt)]
        with self.read() as c:
            return [r[0] for r in c.execute(stmt)]

    def request_with_approvals(self, request_id: str) -> tuple[Request | None, list[str]]:
        """A request and who approved it (oldest first), in one read."""
        with self.read() as c:
            return self.get_request(request_id, conn=c), self.approvers_of(request_id, conn=c)

    def requests_in(self, states: tuple[RequestState, ...], env: str | None = None) -> list[Request]:
        stmt = (
            select(requests)
            .where(requests.c.state.in_([RequestState(s).value for s in states]))
            .order_by(requests.c.created_at)
        )
        if env is not None:
            stmt = stmt.where(requests.c.env == env)
        with self.read() as c:
            return [self._decode(r) for r in c.execute(stmt).mappings()]

    def due_for_expiry(self, now: float) -> list[Request]:
        stmt = select(requests).where(
            requests.c.state == RequestState.PENDING.value, requests.c.expires_at <= now
        )
        with self.read() as c:
            return [self._decode(r) for r in c.execute(stmt).mappings()]

    def claim_reminder(self, request_id: str, event: str, result: str) -> Request | None:
        """Record, once, that the approvers of this pending request are reminded now (an audit event,
        claimed in a transaction that locks the request row, so replicas remind once); the request, or
        None when it is not pending any more or was reminded already."""
        with self.tx() as c:
            req = self.get_request(request_id, conn=c, lock=True)
            if req is None or req.state != RequestState.PENDING or req.expires_at <= time.time():
                return None
            seen = c.execute(
                select(audit.c.id).where(audit.c.request_id == request_id, audit.c.event == event)
            ).first()
            if seen is not None:
                return None
            s = req.session
            self.add_audit(
                c, env=req.env, host=req.host, request_id=request_id, event=event, actor=None,
                pid=s.pid if s else None, backend_start=s.backend_start if s else None,
                db_user=s.user if s else None, application=s.application if s else None, reason=req.reason,
                result=result,
            )
            return req

    def requests_by(self, requester: str, limit: int = 15) -> list[Request]:
        """``requester``'s latest requests, newest first."""
        stmt = (
            select(requests).where(requests.c.requester == requester).order_by(requests.c.created_at.desc())
            .limit(limit)
        )
        with self.read() as c:
            return [self._decode(r) for r in c.execute(stmt).mappings()]

    def closed_database_requests(self, action: str, env: str) -> list[Request]:
        """Finished ``action`` requests of ``env`` whose outcome closed a database not reopened since."""
        stmt = select(requests).where(
            requests.c.action == action,
            requests.c.env == env,
            requests.c.state.in_((RequestState.DONE.value, RequestState.FAILED.value)),
            requests.c.blocked.is_(True),
            or_(requests.c.reopened.is_(None), requests.c.reopened.is_(False)),
        ).order_by(requests.c.created_at)
        with self.read() as c:
            return [self._decode(r) for r in c.execute(stmt).mappings()]

    def interrupted_unnoted(self, action: str) -> list[Request]:
        """Failed ``action`` requests whose outcome is *interrupted* and says nothing of ``blocked``."""
        stmt = select(requests).where(
            requests.c.action == action,
            requests.c.state == RequestState.FAILED.value,
            requests.c.outcome_status == "interrupted",
            requests.c.blocked.is_(None),
        ).order_by(requests.c.created_at)
        with self.read() as c:
            return [self._decode(r) for r in c.execute(stmt).mappings()]

    # --- the state database itself ------------------------------------------------------------------

    def own_connection(self) -> tuple[str, str, str] | None:
        """(role, database, application_name) of this store's PostgreSQL connections, or None for SQLite:
        how they look in ``pg_stat_activity``, so that no path signals them (read once, then kept).

        Raises if the state database cannot be asked."""
        if self.is_sqlite:
            return None
        cached: tuple[str, str, str] | None = getattr(self, "_own_connection", None)
        if cached is None:
            with self.read() as c:
                row = c.exec_driver_sql(
                    "SELECT current_user::text, current_database()::text, current_setting('application_name')"
                ).first()
            if row is None:
                return None
            cached = (str(row[0]), str(row[1]), str(row[2]))
            self._own_connection = cached
        return cached

    def server_identity(self) -> tuple[str, str, str] | None:
        """(postmaster start, port, database) of a PostgreSQL state database, or None for SQLite.

        Raises if the state database cannot be asked."""
        if self.is_sqlite:
            return None
        with self.read() as c:
            row = c.exec_driver_sql(
                "SELECT extract(epoch FROM pg_postmaster_start_time())::text, current_setting('port'), "
                "current_database()"
            ).first()
        return (str(row[0]), str(row[1]), str(row[2])) if row else None

    def backfill_outcome_columns(self, batch: int = 500) -> int:
        """Fill the outcome columns of rows whose outcome was written without them (by a replica of
        release 0.1.0 still running while replicas are replaced); ``reopened`` is never NULL once the
        store has written an outcome. Run at start and hourly; returns the rows fixed."""
        fixed = 0
        stale = and_(requests.c.outcome.is_not(None), requests.c.reopened.is_(None))
        while True:
            with self.tx() as c:
                rows = c.execute(select(requests.c.id, requests.c.outcome).where(stale).limit(batch)).all()
                for rid, raw in rows:
                    try:
                        outcome = json.loads(raw)
                    except ValueError:
                        outcome = None
                    cols = outcome_columns(outcome if isinstance(outcome, dict) else {})
                    c.execute(update(requests).where(requests.c.id == rid, stale).values(**cols))
            fixed += len(rows)
            if len(rows) < batch:
                break
        if fixed:
            log.info("state store: filled the outcome columns of %d requests written by an older release", fixed)
        return fixed

    # --- retention ----------------------------------------------------------------------------------

    def purge_finished(self, older_than: float, batch: int = 500) -> dict[str, int]:
        """Delete what finished before ``older_than``: requests with their approvals, audit entries,
        resolved incidents. Open requests and incidents are never touched, nor a request whose outcome
        closed a database the bot has not reopened (its message keeps the way back).
        Works in batches of ``batch`` rows per transaction so that no purge holds the lock for long."""
        removed = {"requests": 0, "approvals": 0, "audit": 0, "incidents": 0}
        still_closing = and_(requests.c.blocked.is_(True), or_(requests.c.reopened.is_(None), requests.c.reopened.is_(False)))
        while True:
            with self.tx() as c:
                ids = [r[0] for r in c.execute(
                    select(requests.c.id)
                    .where(requests.c.state.in_(FINISHED_STATES), requests.c.updated_at < older_than, ~still_closing)
                    .limit(batch)
                )]
                if not ids:
                    break
                removed["approvals"] += c.execute(delete(approvals).where(approvals.c.request_id.in_(ids))).rowcount
                removed["requests"] += c.execute(
                    delete(requests).where(requests.c.id.in_(ids), requests.c.state.in_(FINISHED_STATES))
                ).rowcount
            if len(ids) < batch:
                break
        while True:
            with self.tx() as c:
                ids = [r[0] for r in c.execute(select(audit.c.id).where(audit.c.at < older_than).limit(batch))]
                if ids:
                    removed["audit"] += c.execute(delete(audit).where(audit.c.id.in_(ids))).rowcount
            if len(ids) < batch:
                break
        ended = func.coalesce(incidents.c.resolved_at, incidents.c.last_update_at, incidents.c.opened_at)
        with self.tx() as c:
            removed["incidents"] += c.execute(
                delete(incidents).where(incidents.c.open.is_(False), ended < older_than)
            ).rowcount
        return removed

    # --- audit (the statements: bot.state.audit) ----------------------------------------------------

    def add_audit(self, conn: Connection | None = None, **values: Any) -> None:
        if conn is not None:
            audit_records.add(conn, values)
            return
        with self.tx() as c:
            audit_records.add(c, values)

    def audit_request(self, req: Request, event: str, actor: str | None, conn: Connection | None = None,
                      result: str | None = None) -> None:
        """One audit line for a request event (``<action>:<event>``), with what the request acted on."""
        self.add_audit(conn, **audit_records.request_values(req, event, actor, result))

    def add_audit_many(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        with self.tx() as c:
            audit_records.add_many(c, rows)

    def audit_entries(
        self,
        env: str | None = None,
        limit: int = 20,
        request_id: str | None = None,
        *,
        since: float | None = None,
        actor: str | None = None,
        action: str | None = None,
        offset: int = 0,
        envs: Collection[str | None] | None = None,
    ) -> list[dict[str, Any]]:
        """The newest entries first (:func:`bot.state.audit.entries`)."""
        with self.read() as c:
            return audit_records.entries(c, env, limit, request_id, since=since, actor=actor, action=action,
                                         offset=offset, envs=envs)

    def audit_counts(
        self, env: str | None = None, *, since: float | None = None, actor: str | None = None,
        action: str | None = None,
    ) -> dict[str | None, int]:
        """How many audit entries match, per environment (so hidden environments can be left out)."""
        with self.read() as c:
            return audit_records.counts(c, env, since=since, actor=actor, action=action)

    def audit_count(self) -> int:
        with self.read() as c:
            return audit_records.count(c)

    def audit_export(
        self, *, env: str | None = None, since: float | None = None, user: str | None = None,
        action: str | None = None, limit: int | None = None, now: float | None = None,
    ) -> list[dict[str, Any]]:
        """Audit rows with their request's requester (:func:`bot.state.audit.export_rows`)."""
        with self.read() as c:
            return audit_records.export_rows(c, env=env, since=since, user=user, action=action, limit=limit,
                                             now=now)

    # --- leader lease -------------------------------------------------------------------------------

    def acquire_lease(self, name: str, holder: str, ttl: float) -> bool:
        """Take or renew a lease; True while ``holder`` holds it."""
        now = time.time()
        with self.tx() as c:
            row = c.execute(
                select(leases).where(leases.c.name == name).with_for_update()
                if not self.is_sqlite
                else select(leases).where(leases.c.name == name)
            ).mappings().first()
            if row is None:
                try:
                    with c.begin_nested():
                        c.execute(insert(leases).values(name=name, holder=holder, expires_at=now + ttl))
                    return True
                except IntegrityError:
                    return False
            if row["holder"] == holder or row["expires_at"] < now:
                res = c.execute(
                    update(leases)
                    .where(leases.c.name == name, leases.c.holder == row["holder"], leases.c.expires_at == row["expires_at"])
                    .values(holder=holder, expires_at=now + ttl)
                )
                return res.rowcount == 1
            return False

    def release_lease(self, name: str, holder: str) -> None:
        with self.tx() as c:
            c.execute(delete(leases).where(leases.c.name == name, leases.c.holder == holder))
