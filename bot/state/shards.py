"""The state store's gateway to the fleet: replicas' heartbeats and the environment leases.

Tables ``pgs_replicas`` (one row per running replica, ``seen_at`` its heartbeat) and ``pgs_env_leases``
(one row per environment: holder, ``generation``, ``expires_at``). A lease row is never deleted: a
release sets ``expires_at`` to 0, so the generation only goes up (a take raises it by one) and a
replica that lost an environment can never find its old generation again.

:meth:`ShardStore.holds` is the fence: inside the caller's write transaction, ``FOR UPDATE`` on the
environment's lease row (PostgreSQL; SQLite write transactions are exclusive anyway), true only while
this replica holds it at the generation it took it with and the lease has not run out. Incident writes
(:class:`bot.state.incidents.Incidents`) and outbox claims (:mod:`bot.slack.outbox`) go through it.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from sqlalchemy import and_, delete, exists, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from bot.fleet.assign import Lease
from bot.state.schema import env_leases, replicas
from bot.state.store import StateStore

FORGET_REPLICAS_AFTER = 86400.0  # a replica row not seen for a day is deleted (kept meanwhile for `check`)
CHUNK = 500  # environments per IN (...) list


@dataclass(frozen=True)
class Replica:
    id: str
    label: str
    started_at: float
    seen_at: float
    owned: int


def _chunks(items: Iterable[str]) -> list[list[str]]:
    seq = sorted(items)
    return [seq[i:i + CHUNK] for i in range(0, len(seq), CHUNK)]


class ShardStore:
    def __init__(self, store: StateStore):
        self.store = store

    # --- heartbeat ----------------------------------------------------------------------------------

    def beat(self, replica: str, label: str, owned: int, ttl: float, now: float) -> list[str]:
        """Record this replica's heartbeat; the ids of the live replicas (seen within ``ttl``), this one too."""
        with self.store.tx() as c:
            res = c.execute(update(replicas).where(replicas.c.id == replica).values(seen_at=now, owned=owned))
            if res.rowcount == 0:
                c.execute(insert(replicas).values(id=replica, label=label[:128], started_at=now, seen_at=now,
                                                  owned=owned))
            c.execute(delete(replicas).where(replicas.c.seen_at < now - FORGET_REPLICAS_AFTER))
            live = c.execute(select(replicas.c.id).where(replicas.c.seen_at >= now - ttl)).scalars().all()
        return list(live)

    def leave(self, replica: str) -> None:
        """A replica that stops: its leases are free at once and it is no longer counted."""
        with self.store.tx() as c:
            c.execute(update(env_leases).where(env_leases.c.holder == replica).values(expires_at=0.0))
            c.execute(delete(replicas).where(replicas.c.id == replica))

    # --- leases -------------------------------------------------------------------------------------

    def leases(self) -> dict[str, Lease]:
        with self.store.read() as c:
            rows = c.execute(select(env_leases.c.env, env_leases.c.holder, env_leases.c.generation,
                                    env_leases.c.expires_at)).all()
        return {r[0]: Lease(r[1], int(r[2]), float(r[3])) for r in rows}

    def renew(self, replica: str, envs: Collection[str], ttl: float, now: float) -> dict[str, int]:
        """Extend the leases this replica still holds (not run out); env -> generation of those renewed."""
        out: dict[str, int] = {}
        if not envs:
            return out
        with self.store.tx() as c:
            for chunk in _chunks(envs):
                rows = c.execute(
                    update(env_leases)
                    .where(env_leases.c.env.in_(chunk), env_leases.c.holder == replica, env_leases.c.expires_at >= now)
                    .values(expires_at=now + ttl)
                    .returning(env_leases.c.env, env_leases.c.generation)
                ).all()
                out.update({r[0]: int(r[1]) for r in rows})
        return out

    def take(self, replica: str, envs: Collection[str], ttl: float, now: float) -> dict[str, int]:
        """Take environments whose lease is free or has run out (or that have no row yet), each at a new
        generation; env -> generation of those taken (another replica may have been faster)."""
        out: dict[str, int] = {}
        if not envs:
            return out
        ins = sqlite_insert(env_leases) if self.store.is_sqlite else pg_insert(env_leases)
        with self.store.tx() as c:
            for chunk in _chunks(envs):
                rows = c.execute(
                    update(env_leases)
                    .where(env_leases.c.env.in_(chunk), env_leases.c.expires_at < now)
                    .values(holder=replica, generation=env_leases.c.generation + 1, expires_at=now + ttl, taken_at=now)
                    .returning(env_leases.c.env, env_leases.c.generation)
                ).all()
                out.update({r[0]: int(r[1]) for r in rows})
                missing = [e for e in chunk if e not in out]
                if missing:
                    rows = c.execute(
                        ins.values([{"env": e, "holder": replica, "generation": 1, "expires_at": now + ttl,
                                     "taken_at": now} for e in missing])
                        .on_conflict_do_nothing(index_elements=["env"])
                        .returning(env_leases.c.env, env_leases.c.generation)
                    ).all()
                    out.update({r[0]: int(r[1]) for r in rows})
        return out

    def release(self, replica: str, envs: Collection[str]) -> None:
        """Hand environments over at once (the next owner takes them at its next tick)."""
        if not envs:
            return
        with self.store.tx() as c:
            for chunk in _chunks(envs):
                c.execute(update(env_leases).where(env_leases.c.env.in_(chunk), env_leases.c.holder == replica)
                          .values(expires_at=0.0))

    # --- the fence ----------------------------------------------------------------------------------

    def held_clause(self, env: str, replica: str, generation: int, now: float) -> ColumnElement[bool]:
        """A WHERE clause true while ``replica`` holds ``env`` at ``generation`` (for conditional UPDATEs)."""
        return exists(
            select(env_leases.c.env).where(
                and_(env_leases.c.env == env, env_leases.c.holder == replica,
                     env_leases.c.generation == generation, env_leases.c.expires_at >= now)
            )
        )

    def holds(self, c: Connection, env: str, replica: str, generation: int) -> bool:
        """In the caller's write transaction: ``replica`` still holds ``env`` at ``generation`` (the row
        locked until the transaction ends, so a take waits for it)."""
        stmt = select(env_leases.c.holder, env_leases.c.generation, env_leases.c.expires_at).where(
            env_leases.c.env == env)
        if not self.store.is_sqlite:
            stmt = stmt.with_for_update()
        row = c.execute(stmt).first()
        return (row is not None and row[0] == replica and int(row[1]) == generation
                and float(row[2]) >= time.time())

    # --- who watches what (check, Home tab) -------------------------------------------------------

    def replicas(self) -> list[Replica]:
        with self.store.read() as c:
            rows = c.execute(select(replicas).order_by(replicas.c.started_at)).mappings().all()
        return [Replica(r["id"], r["label"], float(r["started_at"]), float(r["seen_at"]), int(r["owned"]))
                for r in rows]

    def watchers(self, now: float | None = None) -> dict[str, str]:
        """env -> label of the replica whose lease on it runs now (environments nobody holds are absent)."""
        now = time.time() if now is None else now
        with self.store.read() as c:
            rows = c.execute(
                select(env_leases.c.env, replicas.c.label)
                .select_from(env_leases.join(replicas, replicas.c.id == env_leases.c.holder))
                .where(env_leases.c.expires_at >= now)
            ).all()
        return {r[0]: r[1] for r in rows}
