"""The state store's gateway to the Slack outbox (table ``pgs_outbox``): every statement on it.

The deliverer (:mod:`bot.slack.outbox`) decides what to send and when; this module only reads and writes
the rows: a call queued (``pending``), claimed before it is sent (one conditional UPDATE: still pending,
not tried since it was read, not claimed or backing off; in fleet mode also the environment's lease at
its generation), then ``delivered`` (a post keeps its channel and ts), ``superseded`` by a newer edit of
the same message, or ``failed`` for good; finished rows are pruned after :data:`KEEP_DONE_FOR`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.sql.elements import ColumnElement

from bot.state.schema import incidents
from bot.state.schema import outbox as table
from bot.state.store import StateStore

POST, UPDATE, THREAD_REPLY = "post", "update", "thread_reply"
PENDING, DELIVERED, SUPERSEDED, FAILED = "pending", "delivered", "superseded", "failed"
# A deliverer claims a row before sending it (attempts + 1, next_at pushed this far): another deliverer
# (another replica, or an Acknowledge note sent at once) skips it meanwhile. Longer than one Web API call
# with the client's own retries; if the claimer dies mid-call, the row is tried again after this.
CLAIM_SECS = 120.0
KEEP_DONE_FOR = 7 * 86400.0  # delivered/failed rows are kept a week (a post's ts is looked up by key)


@dataclass
class Item:
    """One Slack call: ``op`` (post, update, thread_reply) of ``payload`` for ``key`` (an incident id)."""

    id: int
    key: str
    op: str
    channel: str
    ts: str | None
    payload: dict[str, Any]
    attempts: int
    next_at: float

    @classmethod
    def from_row(cls, row: RowMapping | Mapping[str, Any]) -> Item:
        return cls(id=int(row["id"]), key=str(row["key"]), op=str(row["op"]), channel=str(row["channel"]),
                   ts=row["ts"], payload=json.loads(row["payload"]), attempts=int(row["attempts"]),
                   next_at=float(row["next_at"]))


@dataclass
class Kept:
    """A call kept in memory while the state store does not answer (``item.id`` is negative)."""

    item: Item
    state: str = PENDING
    error: str | None = None
    created_at: float = 0.0
    delivered_at: float | None = None


class OutboxRows:
    """The rows of ``pgs_outbox`` (and the one read of ``pgs_incidents`` it needs: a key's environment)."""

    def __init__(self, store: StateStore):
        self.store = store

    # --- writes -------------------------------------------------------------------------------------

    def add(self, op: str, key: str, channel: str, msg: Mapping[str, Any], ts: str | None, now: float) -> int:
        """Queue one call (pending); its id."""
        row = {"key": key, "op": op, "channel": channel, "ts": ts, "payload": json.dumps(msg),
               "state": PENDING, "created_at": now, "attempts": 0, "next_at": 0.0}
        with self.store.tx() as c:
            pk = c.execute(insert(table).values(**row)).inserted_primary_key
        assert pk is not None
        return int(pk[0])

    def write_kept(self, kept: Iterable[Kept]) -> None:
        """The calls kept in memory during an outage, as they are, in order (one transaction)."""
        with self.store.tx() as c:
            for k in kept:
                it = k.item
                c.execute(insert(table).values(
                    key=it.key, op=it.op, channel=it.channel, ts=it.ts, payload=json.dumps(it.payload),
                    state=k.state, created_at=k.created_at, attempts=it.attempts,
                    next_at=it.next_at if k.state == PENDING else 0.0, delivered_at=k.delivered_at,
                    last_error=k.error,
                ))

    def claim(self, item: Item, now: float, fence: ColumnElement[bool] | None = None) -> bool:
        """Take ``item`` for this deliverer: still pending, tried ``item.attempts`` times, not claimed or
        backing off (and ``fence``, when given). The attempt is recorded before the call: a crash after it
        leaves a trace (attempts > 0) and the row is tried again after :data:`CLAIM_SECS`."""
        with self.store.tx() as c:
            stmt = update(table).where(table.c.id == item.id, table.c.state == PENDING,
                                       table.c.attempts == item.attempts, table.c.next_at <= now)
            if fence is not None:
                stmt = stmt.where(fence)
            res = c.execute(stmt.values(attempts=table.c.attempts + 1, next_at=now + CLAIM_SECS))
        return int(res.rowcount) == 1

    def delivered(self, item: Item, now: float, channel: str | None = None, ts: str | None = None) -> None:
        """Slack took the call (a post keeps the ``channel`` and ``ts`` Slack answered with)."""
        values: dict[str, Any] = {"state": DELIVERED, "delivered_at": now, "last_error": None}
        if item.op == POST:
            values.update(ts=ts, channel=channel)
        with self.store.tx() as c:
            c.execute(update(table).where(table.c.id == item.id).values(**values))

    def supersede(self, items: Iterable[Item], now: float) -> list[Item]:
        """Mark older edits replaced by a newer one, unless another deliverer claimed them meanwhile."""
        done = []
        with self.store.tx() as c:
            for it in items:
                res = c.execute(
                    update(table)
                    .where(table.c.id == it.id, table.c.state == PENDING, table.c.attempts == it.attempts,
                           table.c.next_at <= now)
                    .values(state=SUPERSEDED, delivered_at=now, last_error=None)
                )
                if int(res.rowcount) == 1:
                    done.append(it)
        return done

    def retry_at(self, item: Item, next_at: float, error: str) -> None:
        with self.store.tx() as c:
            c.execute(update(table).where(table.c.id == item.id).values(next_at=next_at, last_error=error[:200]))

    def finish(self, items: Iterable[Item], state: str, error: str | None, now: float) -> None:
        with self.store.tx() as c:
            c.execute(update(table).where(table.c.id.in_([i.id for i in items]))
                      .values(state=state, delivered_at=now, last_error=error))

    def prune(self, now: float) -> None:
        """Forget finished rows older than :data:`KEEP_DONE_FOR`."""
        with self.store.tx() as c:
            c.execute(delete(table).where(table.c.state != PENDING, table.c.created_at < now - KEEP_DONE_FOR))

    # --- reads --------------------------------------------------------------------------------------

    def pending(self, key: str | None = None) -> list[Item]:
        """The pending calls (of ``key``), oldest first."""
        stmt = select(table).where(table.c.state == PENDING)
        if key is not None:
            stmt = stmt.where(table.c.key == key)
        with self.store.engine.connect() as c:
            return [Item.from_row(r) for r in c.execute(stmt.order_by(table.c.id)).mappings()]

    def post_state(self, key: str) -> tuple[str | None, str | None, str | None]:
        """(state, channel, ts) of the newest post of ``key``; (None, None, None) when there is none."""
        stmt = select(table.c.state, table.c.channel, table.c.ts).where(table.c.key == key, table.c.op == POST)
        with self.store.engine.connect() as c:
            row = c.execute(stmt.order_by(table.c.id.desc()).limit(1)).first()
        return (row[0], row[1], row[2]) if row is not None else (None, None, None)

    def pending_count(self) -> int:
        with self.store.engine.connect() as c:
            return int(c.execute(select(func.count()).select_from(table).where(table.c.state == PENDING)).scalar_one())

    def env_of(self, key: str) -> str | None:
        """The environment of the incident ``key`` is (None: no such incident)."""
        with self.store.read() as c:
            env = c.execute(select(incidents.c.env).where(incidents.c.id == key)).scalar_one_or_none()
        return str(env) if env is not None else None
