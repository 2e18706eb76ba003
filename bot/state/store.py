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
import os
import secrets as pysecrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import (
    and_,
    create_engine,
    delete,
    event,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import IntegrityError

from bot.state import migrate
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

# Bounds on every PostgreSQL state connection (libpq keywords), so that a hung or unreachable state
# server costs bounded time; a value given in the state URL wins.
PG_CONNECT_ARGS: dict[str, Any] = {
    "connect_timeout": 5,
    "tcp_user_timeout": 10_000,  # ms without an ACK before the kernel drops the connection
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}
PG_STATEMENT_TIMEOUT_MS = 5000


def new_id(nbytes: int = 12) -> str:
    return pysecrets.token_urlsafe(nbytes)


def _engine_url(url: str) -> str:
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def _sqlite_path(url: str) -> str | None:
    """The file behind a ``sqlite:///`` URL; None for an in-memory database."""
    db = make_url(url).database
    if not db or db == ":memory:" or db.startswith("file:"):
        return None
    return db


def _create_private_file(path: str) -> None:
    """Create the SQLite file readable only by its owner before SQLite does (with the umask's mode).

    SQLite gives the -wal and -shm files the permissions of the database file.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(fd)
    os.chmod(path, 0o600)  # whatever the umask


def _pg_connect_args(url: str) -> dict[str, Any]:
    query = make_url(url).query
    args = {k: v for k, v in PG_CONNECT_ARGS.items() if k not in query}
    args["application_name"] = query.get("application_name", "pgsessions-state")
    timeout = f"-c statement_timeout={PG_STATEMENT_TIMEOUT_MS}"
    given = query.get("options")
    if isinstance(given, tuple):
        given = " ".join(given)
    if given and "statement_timeout" in given:
        args["options"] = given
    else:
        args["options"] = f"{given} {timeout}" if given else timeout
    return args


def _server_message_only(ctx) -> None:
    """Keep only the server's primary message in a state error: its DETAIL/HINT/CONTEXT lines can quote
    the row (``Key (token)=(...) already exists``, ``Failing row contains (...)``), i.e. the values that
    ``hide_parameters`` keeps out of the SQLAlchemy message. The fields stay readable in ``orig.diag``."""
    orig = ctx.original_exception
    diag = getattr(orig, "diag", None)
    primary = getattr(diag, "message_primary", None)
    if not primary or not orig.args or str(orig.args[0]) == primary:
        return
    orig.args = (primary,)
    exc = ctx.sqlalchemy_exception
    if exc is not None and exc.args:
        exc.args = (f"({orig.__class__.__module__}.{orig.__class__.__name__}) {primary}",) + tuple(exc.args[1:])


class StateStore:
    def __init__(self, url: str):
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            path = _sqlite_path(url)
            if path is not None:
                _create_private_file(path)
            engine = create_engine(
                url,
                connect_args={"check_same_thread": False, "timeout": 30},
                pool_pre_ping=False,
                hide_parameters=True,
            )

            @event.listens_for(engine, "connect")
            def _on_connect(dbapi_conn, _record):  # pragma: no cover - wiring
                dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")
                cur.execute("PRAGMA busy_timeout=30000")
                cur.close()

            @event.listens_for(engine, "begin")
            def _on_begin(conn):  # pragma: no cover - wiring
                # Writers serialise at BEGIN (no deadlock upgrading a read lock); readers take no lock:
                # in WAL mode a deferred read transaction never waits for a writer.
                if conn.get_execution_options().get("pgs_write"):
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                else:
                    conn.exec_driver_sql("BEGIN")

        else:
            engine = create_engine(
                _engine_url(url),
                pool_pre_ping=True,
                pool_size=5,
                max_overflow=10,
                pool_timeout=10,
                hide_parameters=True,
                connect_args=_pg_connect_args(url),
            )

        event.listen(engine, "handle_error", _server_message_only)
        # Plain engine.connect() reads (deferred BEGIN on SQLite); tx() writes (BEGIN IMMEDIATE).
        self.engine: Engine = engine
        self._writer: Engine = engine.execution_options(pgs_write=True)
        self.schema_revisions: tuple[str | None, str | None] = (None, None)
        with self._writer.begin() as conn:
            self.schema_revisions = migrate.upgrade(conn)
        self.backfill_outcome_columns()

    def close(self) -> None:
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
        self, kind: str, env: str, host: str, channel: str | None, user: str | None, payloads: list[dict]
    ) -> list[str]:
        now = time.time()
        tokens = [new_id(9) for _ in payloads]
        if payloads:
            with self.tx() as c:
                c.execute(
                    insert(targets),
                    [
                        {
                            "token": t,
                            "kind": kind,
                            "env": env,
                            "host": host,
                            "channel": channel,
                            "created_by": user,
                            "created_at": now,
                            "payload": json.dumps(p, default=str),
                        }
                        for t, p in zip(tokens, payloads, strict=True)
                    ],
                )
        return tokens

    def get_target(self, token: str) -> dict | None:
        with self.read() as c:
            row = c.execute(select(targets).where(targets.c.token == token)).mappings().first()
        if row is None:
            return None
        out = dict(row)
        out["payload"] = json.loads(out["payload"])
        return out

    def claim_once(self, key: str) -> bool:
        """Record that ``key`` (e.g. a modal submission) was acted on; False if it already was.

        Atomic on both backends (a primary-key insert), so a replayed or retried submission creates
        nothing twice. Kept in pgs_targets (kind 'once') and purged with the button tokens.
        """
        try:
            with self.tx() as c:
                c.execute(insert(targets).values(
                    token=key[:32], kind="once", env="-", host="-", channel=None, created_by=None,
                    created_at=time.time(), payload="{}",
                ))
        except IntegrityError:
            return False
        return True

    def purge_targets(self, older_than: float) -> int:
        with self.tx() as c:
            return c.execute(delete(targets).where(targets.c.created_at < older_than)).rowcount

    # --- requests -----------------------------------------------------------------------------------

    def create_request(self, **values: Any) -> dict:
        now = time.time()
        row = {
            "id": new_id(9),
            "state": "pending",
            "created_at": now,
            "updated_at": now,
            **values,
        }
        row["target"] = json.dumps(row["target"], default=str)
        if "outcome" in row:
            row.update(outcome_columns(row["outcome"]))
            if row["outcome"] is not None:
                row["outcome"] = json.dumps(row["outcome"], default=str)
        with self.tx() as c:
            c.execute(insert(requests).values(**row))
        return self.get_request(row["id"])  # type: ignore[return-value]

    @staticmethod
    def _decode(row: Any) -> dict:
        out = dict(row)
        for derived in DERIVED_COLUMNS:  # copies of outcome facts for queries; the outcome says it all
            out.pop(derived, None)
        out["target"] = json.loads(out["target"])
        if out.get("outcome"):
            out["outcome"] = json.loads(out["outcome"])
        return out

    def get_request(self, request_id: str, conn: Connection | None = None, lock: bool = False) -> dict | None:
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
        self, conn: Connection, request_id: str, expected: str | tuple[str, ...], new: str, **values: Any
    ) -> bool:
        """Move a request from ``expected`` to ``new``; False when another click got there first."""
        exp = (expected,) if isinstance(expected, str) else expected
        if "outcome" in values:
            values.update(outcome_columns(values["outcome"]))
            if values["outcome"] is not None:
                values["outcome"] = json.dumps(values["outcome"], default=str)
        res = conn.execute(
            update(requests)
            .where(requests.c.id == request_id, requests.c.state.in_(exp))
            .values(state=new, updated_at=time.time(), **values)
        )
        return res.rowcount == 1

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

    def requests_in(self, states: tuple[str, ...], env: str | None = None) -> list[dict]:
        stmt = select(requests).where(requests.c.state.in_(states)).order_by(requests.c.created_at)
        if env is not None:
            stmt = stmt.where(requests.c.env == env)
        with self.read() as c:
            return [self._decode(r) for r in c.execute(stmt).mappings()]

    def due_for_expiry(self, now: float) -> list[dict]:
        stmt = select(requests).where(requests.c.state == "pending", requests.c.expires_at <= now)
        with self.read() as c:
            return [self._decode(r) for r in c.execute(stmt).mappings()]

    def closed_database_requests(self, action: str, env: str) -> list[dict]:
        """Finished ``action`` requests of ``env`` whose outcome closed a database not reopened since."""
        stmt = select(requests).where(
            requests.c.action == action,
            requests.c.env == env,
            requests.c.state.in_(("done", "failed")),
            requests.c.blocked.is_(True),
            or_(requests.c.reopened.is_(None), requests.c.reopened.is_(False)),
        ).order_by(requests.c.created_at)
        with self.read() as c:
            return [self._decode(r) for r in c.execute(stmt).mappings()]

    def interrupted_unnoted(self, action: str) -> list[dict]:
        """Failed ``action`` requests whose outcome is *interrupted* and says nothing of ``blocked``."""
        stmt = select(requests).where(
            requests.c.action == action,
            requests.c.state == "failed",
            requests.c.outcome_status == "interrupted",
            requests.c.blocked.is_(None),
        ).order_by(requests.c.created_at)
        with self.read() as c:
            return [self._decode(r) for r in c.execute(stmt).mappings()]

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

    # --- audit --------------------------------------------------------------------------------------

    def add_audit(self, conn: Connection | None = None, **values: Any) -> None:
        from bot.audit_export import log_audit  # one structured log line per audit event

        values.setdefault("at", time.time())
        log_audit(values)
        if conn is not None:
            conn.execute(insert(audit).values(**values))
            return
        with self.tx() as c:
            c.execute(insert(audit).values(**values))

    def add_audit_many(self, rows: list[dict]) -> None:
        if not rows:
            return
        from bot.audit_export import log_audit

        now = time.time()
        rows = [{"at": now, **r} for r in rows]
        for r in rows:
            log_audit(r)
        with self.tx() as c:
            c.execute(insert(audit), rows)

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
    ) -> list[dict]:
        stmt = select(audit).order_by(audit.c.id.desc()).limit(limit).offset(offset)
        if env is not None:
            stmt = stmt.where(audit.c.env == env)
        if request_id is not None:
            stmt = stmt.where(audit.c.request_id == request_id)
        if since is not None:
            stmt = stmt.where(audit.c.at >= since)
        if actor is not None:
            stmt = stmt.where(audit.c.actor == actor)
        if action is not None:
            stmt = stmt.where(audit.c.event.like(f"{action}:%"))
        with self.read() as c:
            return [dict(r) for r in c.execute(stmt).mappings()]

    def audit_counts(
        self, env: str | None = None, *, since: float | None = None, actor: str | None = None,
        action: str | None = None,
    ) -> dict[str | None, int]:
        """How many audit entries match, per environment (so hidden environments can be left out)."""
        stmt = select(audit.c.env, func.count()).group_by(audit.c.env)
        if env is not None:
            stmt = stmt.where(audit.c.env == env)
        if since is not None:
            stmt = stmt.where(audit.c.at >= since)
        if actor is not None:
            stmt = stmt.where(audit.c.actor == actor)
        if action is not None:
            stmt = stmt.where(audit.c.event.like(f"{action}:%"))
        with self.read() as c:
            return {e: int(n) for e, n in c.execute(stmt)}

    def audit_count(self) -> int:
        with self.read() as c:
            return int(c.execute(select(func.count()).select_from(audit)).scalar_one())

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
