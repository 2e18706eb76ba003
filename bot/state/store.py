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
from sqlalchemy.engine import Connection, Engine, RowMapping
from sqlalchemy.exc import IntegrityError

from bot.approval.models import (
    TARGET,
    NewRequest,
    Outcome,
    Request,
    RequestState,
    StoredTarget,
    Target,
    request_from_dict,
    with_kind,
)

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
            def _on_connect(dbapi_conn: Any, _record: Any) -> None:  # pragma: no cover - wiring
                dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")
                cur.execute("PRAGMA busy_timeout=30000")
                cur.close()

            @event.listens_for(engine, "begin")
            def _on_begin(conn: Connection) -> None:  # pragma: no cover - wiring
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
        with self.engine.connect() as c:
            row = c.execute(select(targets).where(targets.c.token == token)).mappings().first()
        if row is None:
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

    def purge_targets(self, older_than: float) -> int:
        with self.tx() as c:
            return int(c.execute(delete(targets).where(targets.c.created_at < older_than)).rowcount)

    # --- requests -----------------------------------------------------------------------------------

    def create_request(self, new: NewRequest) -> Request:
        now = time.time()
        row = {
            **new.model_dump(exclude={"target"}),
            "id": new_id(9),
            "state": RequestState.PENDING.value,
            "created_at": now,
            "updated_at": now,
            "target": new.target.model_dump_json(exclude_none=True),
        }
        with self.tx() as c:
            c.execute(insert(requests).values(**row))
            created = self.get_request(row["id"], conn=c)
        assert created is not None
        return created

    @staticmethod
    def _decode(row: RowMapping) -> Request:
        data = dict(row)
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
            with self.engine.connect() as c:
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
    ) -> bool:
        """Move a request from ``expected`` to ``new``; False when another click got there first.

        ``outcome`` (when given) replaces the stored outcome; a transition to the same state only
        records progress or a changed outcome."""
        exp = (expected,) if isinstance(expected, RequestState) else expected
        values: dict[str, Any] = {"state": new.value, "updated_at": time.time()}
        if outcome is not None:
            values["outcome"] = outcome.model_dump_json(exclude_none=True)
        if decided_at is not None:
            values["decided_at"] = decided_at
        if decided_by is not None:
            values["decided_by"] = decided_by
        res = conn.execute(
            update(requests)
            .where(requests.c.id == request_id, requests.c.state.in_([e.value for e in exp]))
            .values(**values)
        )
        return int(res.rowcount) == 1

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

    def requests_in(self, states: tuple[RequestState, ...], env: str | None = None) -> list[Request]:
        stmt = (
            select(requests)
            .where(requests.c.state.in_([s.value for s in states]))
            .order_by(requests.c.created_at)
        )
        if env is not None:
            stmt = stmt.where(requests.c.env == env)
        with self.engine.connect() as c:
            return [self._decode(r) for r in c.execute(stmt).mappings()]

    def due_for_expiry(self, now: float) -> list[Request]:
        stmt = select(requests).where(
            requests.c.state == RequestState.PENDING.value, requests.c.expires_at <= now
        )
        with self.engine.connect() as c:
            return [self._decode(r) for r in c.execute(stmt).mappings()]

    # Narrow reads for the clear-db housekeeping (requests_in() would decode every finished request,
    # snapshots of hundreds of sessions included). The outcome JSON is written by pydantic without
    # spaces; both spellings are matched so that rows written by earlier releases (json.dumps) are
    # found too. The LIKE patterns only pre-select: callers check the decoded outcome exactly.
    # (A real column for "closed a database and not reopened yet" would replace them.)

    def _requests_where(self, action: str, *conditions: Any) -> list[Request]:
        t = requests
        with self.engine.connect() as c:
            rows = c.execute(select(t).where(t.c.action == action, *conditions)).mappings().all()
        return [self._decode(r) for r in rows]

    def closing_requests(self, action: str, env: str) -> list[Request]:
        """Finished ``action`` requests of ``env`` whose outcome says they closed a database that the bot
        has not seen reopened."""
        t = requests
        return self._requests_where(
            action,
            t.c.env == env,
            t.c.state.in_((RequestState.DONE.value, RequestState.FAILED.value)),
            t.c.outcome.like('%"blocked": true%') | t.c.outcome.like('%"blocked":true%'),
            ~t.c.outcome.like('%"reopened"%'),
        )

    def interrupted_unrepaired(self, action: str) -> list[Request]:
        """Failed ``action`` requests ended as interrupted whose outcome does not say yet whether they
        closed their database."""
        t = requests
        return self._requests_where(
            action,
            t.c.state == RequestState.FAILED.value,
            t.c.outcome.like('%"interrupted"%'),
            ~t.c.outcome.like('%"blocked"%'),
        )

    # --- the state database itself ------------------------------------------------------------------

    def server_identity(self) -> tuple[str, str, str] | None:
        """(postmaster start, port, database) of a PostgreSQL state database, or None for SQLite.

        Raises if the state database cannot be asked."""
        if self.is_sqlite:
            return None
        with self.engine.connect() as c:
            row = c.exec_driver_sql(
                "SELECT extract(epoch FROM pg_postmaster_start_time())::text, current_setting('port'), "
                "current_database()"
            ).first()
        return (str(row[0]), str(row[1]), str(row[2])) if row else None

    # --- audit --------------------------------------------------------------------------------------

    def add_audit(self, conn: Connection | None = None, **values: Any) -> None:
        values.setdefault("at", time.time())
        if conn is not None:
            conn.execute(insert(audit).values(**values))
            return
        with self.tx() as c:
            c.execute(insert(audit).values(**values))

    def add_audit_many(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        now = time.time()
        with self.tx() as c:
            c.execute(insert(audit), [{"at": now, **r} for r in rows])

    def audit_entries(self, env: str | None = None, limit: int = 20, request_id: str | None = None) -> list[dict[str, Any]]:
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
