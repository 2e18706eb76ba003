"""The bot's own state: button tokens, kill requests, approvals, audit, lag incidents, leader lease.

One code path for both backends through SQLAlchemy Core: a SQLite file by default
(``state: sqlite:///path``) and PostgreSQL (``state: postgresql://...``) so that several replicas can
share it. Every state transition is a conditional UPDATE inside a transaction that first locks the
request row (``FOR UPDATE`` on PostgreSQL; SQLite write transactions start with ``BEGIN IMMEDIATE``), so
concurrent clicks serialise and exactly one of them wins.
"""

from __future__ import annotations

import json
import secrets as pysecrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

metadata = MetaData()

targets = Table(
    "pgs_targets",
    metadata,
    Column("token", String(32), primary_key=True),
    Column("kind", String(16), nullable=False),  # session | bulk | database
    Column("env", String(64), nullable=False),
    Column("host", String(64), nullable=False),
    Column("channel", String(32)),
    Column("created_by", String(32)),
    Column("created_at", Float, nullable=False),
    Column("payload", Text, nullable=False),
)

requests = Table(
    "pgs_requests",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("env", String(64), nullable=False),
    Column("host", String(64), nullable=False),
    Column("action", String(32), nullable=False),
    Column("target_token", String(32)),
    Column("target", Text, nullable=False),
    Column("requester", String(32), nullable=False),
    Column("reason", Text),
    Column("channel", String(32)),
    Column("message_ts", String(32)),
    Column("state", String(16), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("decided_at", Float),
    Column("decided_by", String(64)),
    Column("outcome", Text),
    Column("updated_at", Float, nullable=False),
)

approvals = Table(
    "pgs_approvals",
    metadata,
    Column("request_id", String(32), nullable=False),
    Column("approver", String(32), nullable=False),
    Column("at", Float, nullable=False),
    UniqueConstraint("request_id", "approver", name="pgs_approvals_once"),
)

audit = Table(
    "pgs_audit",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False),
    Column("env", String(64)),
    Column("host", String(64)),
    Column("request_id", String(32)),
    Column("event", String(32), nullable=False),
    Column("actor", String(32)),
    Column("pid", Integer),
    Column("backend_start", String(40)),
    Column("db_user", String(128)),
    Column("application", String(256)),
    Column("query", Text),
    Column("reason", Text),
    Column("result", Text),
)

incidents = Table(
    "pgs_incidents",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("env", String(64), nullable=False),
    Column("host", String(64), nullable=False),
    Column("kind", String(16), nullable=False),  # lag | unreachable
    Column("open", Boolean, nullable=False),
    Column("opened_at", Float, nullable=False),
    Column("resolved_at", Float),
    Column("channel", String(32)),
    Column("message_ts", String(32)),
    Column("last_update_at", Float),
    Column("last_reminder_at", Float),
    Column("payload", Text, nullable=False),
)

leases = Table(
    "pgs_leases",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("holder", String(128), nullable=False),
    Column("expires_at", Float, nullable=False),
)


def new_id(nbytes: int = 12) -> str:
    return pysecrets.token_urlsafe(nbytes)


def _engine_url(url: str) -> str:
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


class StateStore:
    def __init__(self, url: str):
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            engine = create_engine(
                url, connect_args={"check_same_thread": False, "timeout": 30}, pool_pre_ping=False
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
                conn.exec_driver_sql("BEGIN IMMEDIATE")

        else:
            engine = create_engine(
                _engine_url(url),
                pool_pre_ping=True,
                pool_size=5,
                max_overflow=10,
                connect_args={"connect_timeout": 5, "application_name": "pgsessions-state"},
            )
        self.engine: Engine = engine
        metadata.create_all(engine)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def tx(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
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
        with self.engine.connect() as c:
            row = c.execute(select(targets).where(targets.c.token == token)).mappings().first()
        if row is None:
            return None
        out = dict(row)
        out["payload"] = json.loads(out["payload"])
        return out

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
        with self.tx() as c:
            c.execute(insert(requests).values(**row))
        return self.get_request(row["id"])  # type: ignore[return-value]

    @staticmethod
    def _decode(row: Any) -> dict:
        out = dict(row)
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
            with self.engine.connect() as c:
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
        if "outcome" in values and values["outcome"] is not None:
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
        with self.engine.connect() as c:
            return [r[0] for r in c.execute(stmt)]

    def requests_in(self, states: tuple[str, ...], env: str | None = None) -> list[dict]:
        stmt = select(requests).where(requests.c.state.in_(states)).order_by(requests.c.created_at)
        if env is not None:
            stmt = stmt.where(requests.c.env == env)
        with self.engine.connect() as c:
            return [self._decode(r) for r in c.execute(stmt).mappings()]

    def due_for_expiry(self, now: float) -> list[dict]:
        stmt = select(requests).where(requests.c.state == "pending", requests.c.expires_at <= now)
        with self.engine.connect() as c:
            return [self._decode(r) for r in c.execute(stmt).mappings()]

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

    def audit_entries(self, env: str | None = None, limit: int = 20, request_id: str | None = None) -> list[dict]:
        stmt = select(audit).order_by(audit.c.id.desc()).limit(limit)
        if env is not None:
            stmt = stmt.where(audit.c.env == env)
        if request_id is not None:
            stmt = stmt.where(audit.c.request_id == request_id)
        with self.engine.connect() as c:
            return [dict(r) for r in c.execute(stmt).mappings()]

    def audit_count(self) -> int:
        with self.engine.connect() as c:
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
