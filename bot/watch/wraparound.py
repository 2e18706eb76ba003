"""The transaction ID wraparound detector (``watch.wraparound``): a source of the watch's conditions.

PostgreSQL numbers transactions (and multixacts) with 32 bits: a database whose oldest unfrozen
transaction ID (``age(datfrozenxid)``) or multixact (``mxid_age(datminmxid)``) nears 2^31 stops taking
writes until it is vacuumed. VACUUM can only freeze rows older than the oldest snapshot still needed,
so the alert names what holds that horizon back: the session with the oldest ``backend_xmin`` /
``backend_xid`` (Terminate offered, approval-gated, bound to what the alert showed), a prepared
transaction, a replication slot, a standby's ``hot_standby_feedback``.

* :func:`read` — one statement (``queries/wraparound.sql``) on the primary; a quiet check reads
  ``pg_database`` only, the holders travel only while a database is over the threshold.
* :data:`DETECTOR` — how the watch runs it (:mod:`bot.watch.detectors`): on the primary, when
  ``watch.wraparound`` is set.
* :func:`conditions` — pure: the reading and the configuration in, the condition out (kind
  :data:`~bot.watch.model.WRAPAROUND`, one per host). Its lifecycle (consecutive checks, edits,
  reminders, Acknowledge, resolution) is the watch's shared rules (:func:`bot.watch.rules.decide`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg.rows import dict_row

from bot.config import Environment, IgnoreRule, Watch
from bot.postgres.pools import Databases, DatabaseUnavailable
from bot.postgres.redact import redact
from bot.postgres.sql import query
from bot.watch.model import WRAPAROUND, HostSnapshot, session_from_row
from bot.watch.rules import MAX_SHOWN, Condition, HorizonClock, horizon_holders

HOLDER_SESSIONS = 5  # sessions read as holders at most (oldest first)
MAX_DATABASES = 10  # databases listed in one alert
XID_LIMIT = 2**31  # where the counters wrap: PostgreSQL refuses new transactions a few million before


@dataclass(frozen=True, slots=True)
class DatabaseAge:
    name: str
    xid_age: int
    mxid_age: int

    @property
    def age(self) -> int:
        return max(self.xid_age, self.mxid_age)

    def facts(self) -> dict[str, Any]:
        return {"name": self.name, "xid_age": self.xid_age, "mxid_age": self.mxid_age}


@dataclass(frozen=True)
class WraparoundReading:
    """One read of a host: the databases over the threshold, and what holds the horizon back (as a
    :class:`HostSnapshot` carrying only the holders, so the xmin rules name them the same way)."""

    databases: tuple[DatabaseAge, ...]
    oldest: int  # the largest age of any database (over the threshold or not)
    holders: HostSnapshot


def reading_from_row(env: str, host: str, taken_at: float, row: dict[str, Any],
                     redact: Callable[[str], str] | None = None) -> WraparoundReading:
    sup, sig = bool(row["bot_is_super"]), bool(row["bot_can_signal"])
    snap = HostSnapshot(
        env=env, host=host, taken_at=taken_at, in_recovery=bool(row["in_recovery"]), max_connections=0,
        superuser_reserved=0, client_connections=0,
        sessions=tuple(session_from_row(r, sup, sig, redact) for r in row.get("sessions") or ()),
        prepared=tuple(row.get("prepared") or ()), slots=tuple(row.get("slots") or ()),
        feedback=tuple(row.get("feedback") or ()),
    )
    dbs = tuple(DatabaseAge(str(d["datname"]), int(d["xid_age"] or 0), int(d["mxid_age"] or 0))
                for d in row.get("databases") or ())
    return WraparoundReading(databases=dbs, oldest=int(row.get("oldest") or 0), holders=snap)


def read(dbs: Databases, env: str, host: str, threshold: int, taken_at: float, *, query_chars: int = 300,
         redact: Callable[[str], str] | None = None) -> WraparoundReading:
    """One read of one host (``wraparound.sql``); :class:`DatabaseUnavailable` when it cannot be read."""
    params = {"threshold": threshold, "query_chars": max(query_chars, 200), "holders": HOLDER_SESSIONS}
    with dbs.connection(env, host, op="watch") as conn:
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(query("wraparound"), params)
            row = cur.fetchone()
    if row is None:  # the statement always returns one row
        raise DatabaseUnavailable(env, host, "the wraparound read returned nothing")
    return reading_from_row(env, host, taken_at, row, redact)


def conditions(reading: WraparoundReading, watch: Watch, ignore: Sequence[IgnoreRule] = (),
               clock: HorizonClock | None = None) -> list[Condition]:
    """The wraparound condition of one host now: every database at or over the threshold (oldest first),
    and the holders of the horizon (oldest transaction first; ``ignore`` hides sessions as everywhere;
    ``clock``: since when slots and standby feedback have been seen, as for the xmin horizon).
    A standby mirrors its primary's counters: only the primary alerts."""
    cfg = watch.wraparound
    if cfg is None or reading.holders.in_recovery:
        return []
    over = sorted((d for d in reading.databases if d.age >= cfg.threshold), key=lambda d: (-d.age, d.name))
    if not over:
        return []
    holders = sorted(horizon_holders(reading.holders, ignore, clock), key=lambda h: -(h["xid_age"] or 0))
    by_key = {s.key: s for s in reading.holders.sessions}
    sessions = []
    for h in holders[:MAX_SHOWN]:
        s = by_key.get(h["key"]) if h["type"] == "backend" else None
        if s is not None and s.is_client:
            sessions.append(s)
    worst = over[0]
    facts = {
        "threshold": cfg.threshold,
        "limit": XID_LIMIT,
        "count": len(over),
        "worst": worst.facts(),
        "databases": [d.facts() for d in over[:MAX_DATABASES]],
        "holders": holders[:MAX_SHOWN],
    }
    return [Condition(WRAPAROUND, "", facts, tuple(sessions))]


class WraparoundDetector:
    """The detector the watch runs (:class:`bot.watch.detectors.Detector`)."""

    kind = WRAPAROUND

    def __init__(self) -> None:
        # since when each slot / standby feedback xmin has been seen, per (environment, host): they carry
        # no time of their own (each host's checks run one at a time)
        self.clocks: dict[tuple[str, str], HorizonClock] = {}

    def configured(self, watch: Watch) -> bool:
        return watch.wraparound is not None

    def reads(self, watch: Watch, host: str) -> bool:
        return watch.wraparound is not None and host == "primary"  # a standby mirrors its primary's counters

    def detect(self, dbs: Databases, env: str, host: str, environment: Environment, watch: Watch) -> list[Condition]:
        assert watch.wraparound is not None
        reading = read(dbs, env, host, watch.wraparound.threshold, time.time(),
                       query_chars=environment.listing.query_chars,
                       redact=redact if environment.redact_queries else None)
        return conditions(reading, watch, environment.ignore, self.clocks.setdefault((env, host), HorizonClock()))


DETECTOR = WraparoundDetector()
