"""The typed records of incidents: what one alert knows, as :mod:`bot.approval.models` is for requests.

An incident row (``pgs_incidents``) has columns (kind, env, host, when it opened, its message) and a JSON
``payload``; the state store converts that JSON at its boundary (:mod:`bot.state.incidents`) into an
:class:`IncidentPayload`, and nothing above it reads a payload by string key:

* ``key``: what tells incidents of one kind on one host apart (a pile-up's root, a pool), "" for most;
* ``facts``: typed per kind (:data:`FACTS`): the lag watcher's lag (:class:`LagFacts`: since, peaks,
  reasons, last measurement), each session-watch kind (lock pile-up, idle in transaction, long running,
  connections, xmin horizon, WAL receiver, pool waiting, wraparound), and the one kind both watchers
  share, the host that cannot be read (:class:`UnreachableFacts`, with its :class:`Origin`: a standby
  the lag watcher checks, or a host the session watch checks; stored under each origin's old kind name,
  :data:`UNREACHABLE_KINDS`);
* ``ack``: who acknowledged it (:class:`Ack`, written by whoever clicks, kept by every later write of the
  leader) and ``ack_drawn``: whether its message says so yet;
* ``tokens`` / ``bulk``: the reissue memory of :mod:`bot.approval.tokens` (the buttons an alert reuses);
* ``seen``: every session the alert named while it lasted (:class:`Seen`), for "what was done";
* the marks it is closed with: ``closed`` (not watched any more, or :data:`bot.state.incidents.DUPLICATE`)
  and ``done`` (the lines of what was done).

Every model is frozen and keeps fields it does not know (``extra="allow"``): a row written by another
release reads back and is written again as it was. The JSON shape is the one release 0.1 wrote (the lag
watcher's facts at the top of the payload, the session watch's under ``facts``), so no migration is needed
and replicas of both releases read each other's rows during a rolling upgrade.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from enum import StrEnum
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError

log = logging.getLogger(__name__)

Num = int | float  # kept as given: an int stays an int, so a text drawn from stored facts reads the same

# the lag watcher's lag kind (bot.lagwatch.rules); the session watch's kinds are in bot.watch.model
LAG = "lag"


class Origin(StrEnum):
    """Who found that a host cannot be read: the one "unreachable" kind, checked by either watcher."""

    STANDBY = "standby"  # a standby the lag watcher checks (bot.lagwatch)
    HOST = "host"  # a host the session watch checks: a primary, or a standby no lag watcher checks (bot.watch)


# The one "host cannot be read" kind keeps, per origin, the kind name its watcher always stored in
# ``pgs_incidents.kind``, so that replicas of the previous release and of this one keep recognising each
# other's rows during a rolling upgrade (and each watcher's alert texts stay its own).
UNREACHABLE_KINDS: dict[Origin, str] = {Origin.STANDBY: "unreachable", Origin.HOST: "host_unreachable"}
UNREACHABLE = UNREACHABLE_KINDS[Origin.STANDBY]
HOST_UNREACHABLE = UNREACHABLE_KINDS[Origin.HOST]


def unreachable_origin(kind: str) -> Origin | None:
    """The origin of an incident of the "unreachable" kind stored as ``kind`` (None: another kind)."""
    return next((o for o, k in UNREACHABLE_KINDS.items() if k == kind), None)


class Frozen(BaseModel):
    # extra="allow": a field another release wrote is kept, and written back as it was
    model_config = ConfigDict(frozen=True, extra="allow")


# --- what an alert names ------------------------------------------------------------------------------


class SessionFacts(Frozen):
    """One session as an alert shows it (``bot.watch.model.WatchSession.facts``)."""

    pid: int | None = None
    backend_start: str | None = None
    user: str | None = None
    database: str | None = None
    application: str | None = None
    client_addr: str | None = None
    state: str | None = None
    query: str | None = None
    query_secs: Num | None = None
    xact_secs: Num | None = None
    state_secs: Num | None = None
    wait_secs: Num | None = None
    wait_mode: str | None = None
    wait_relation: str | None = None
    cannot_signal: str | None = None
    backend_type: str | None = None

    @property
    def key(self) -> str:
        """The session's identity, as the audit log and ``seen`` write it."""
        return f"{self.pid}@{self.backend_start}"


class DdlWaiter(SessionFacts):
    """A pile-up's waiter asking for AccessExclusiveLock that others queue behind."""

    queued: int = 0


class HeldLock(Frozen):
    mode: str | None = None
    relation: str | None = None


class PileupThreshold(Frozen):
    waiters: int = 0
    wait: Num = 0


class Holder(Frozen):
    """What holds the xmin horizon back (``bot.watch.rules.horizon_holders``): a backend, a prepared
    transaction, a replication slot or a standby's feedback (``type``)."""

    type: str | None = None
    secs: Num | None = None
    xid_age: Num | None = None
    key: str | None = None
    session: SessionFacts | None = None
    backend_type: str | None = None
    gid: str | None = None
    owner: str | None = None
    database: str | None = None
    slot_name: str | None = None
    slot_type: str | None = None
    active: bool | None = None
    retained_bytes: Num | None = None
    xmin: str | int | None = None
    catalog_xmin: str | int | None = None
    application: str | None = None
    client_addr: str | None = None


class DatabaseAge(Frozen):
    name: str | None = None
    xid_age: int = 0
    mxid_age: int = 0


class LagLast(Frozen):
    """A lag incident's last measurement."""

    lag_secs: Num | None = None
    lag_bytes: int = 0
    reason: str | None = None
    at: str | None = None


# --- facts per kind ---------------------------------------------------------------------------------


class Facts(Frozen):
    """The facts of one kind of incident (a kind another release added reads as this, with its fields kept)."""


class LagFacts(Facts):
    """A standby whose replay lags (the lag watcher's ``lag``): since when, the worst seen, every reason."""

    since: str | None = None
    peak_secs: Num | None = None
    peak_bytes: int | None = None
    reasons: tuple[str, ...] = ()
    last: LagLast | None = None


class UnreachableFacts(Facts):
    """A host that cannot be read, the one kind both watchers share: the last error, and since when (the
    lag watcher's) or how many checks in a row (the session watch's). ``origin`` says whose it is; it is
    never written to the JSON (the stored kind name says it: :data:`UNREACHABLE_KINDS`) and is set from
    that name where facts are read (:func:`facts_from_json`)."""

    origin: Origin = Field(default=Origin.STANDBY, exclude=True)
    since: str | None = None
    reason: str | None = None
    failures: int = 0


# the name the session watch's unreachable facts had: the same one model
HostUnreachableFacts = UnreachableFacts


class LockPileupFacts(Facts):
    root: SessionFacts | None = None
    root_idle_in_transaction: bool = False
    held: tuple[HeldLock, ...] = ()
    direct: int = 0
    total: int = 0
    longest_wait: Num = 0
    ddl: DdlWaiter | None = None
    waiters: tuple[SessionFacts, ...] = ()
    threshold: PileupThreshold | None = None


class SessionsFacts(Facts):
    """Sessions over a time limit (``idle_in_tx``, ``long_running``)."""

    count: int = 0
    threshold: Num = 0
    worst_secs: Num | None = None
    sessions: tuple[SessionFacts, ...] = ()


class ConnectionsFacts(Facts):
    used: int = 0
    usable: int = 0
    max: int = 0
    reserved: int = 0
    share: Num = 0
    threshold: Num = 0
    by_app: tuple[tuple[str, int], ...] = ()
    by_user: tuple[tuple[str, int], ...] = ()
    by_state: tuple[tuple[str, int], ...] = ()
    bulk_app: str | None = None
    bulk_count: int = 0
    idle_of_app: int = 0


class XminHorizonFacts(Facts):
    threshold: Num = 0
    oldest: Holder | None = None
    holders: tuple[Holder, ...] = ()
    count: int = 0


class WalReceiverFacts(Facts):
    status: str | None = None
    silent_secs: Num | None = None


class PoolWaitingFacts(Facts):
    pooler: str | None = None
    pool: str | None = None
    waiting: int = 0
    longest_wait: Num = 0
    active: int | None = None
    servers_active: int | None = None
    servers_busy: int = 0
    pool_size: int | None = None
    pool_mode: str | None = None
    threshold: Num = 0
    holders: tuple[SessionFacts, ...] = ()
    holders_total: int = 0


class WraparoundFacts(Facts):
    threshold: int = 0
    limit: int = 0
    count: int = 0
    worst: DatabaseAge | None = None
    databases: tuple[DatabaseAge, ...] = ()
    holders: tuple[Holder, ...] = ()


# the facts of each kind (the session watch's kind names are bot.watch.model's; a models module does
# not import another's constants only to spell the same strings)
FACTS: dict[str, type[Facts]] = {
    LAG: LagFacts,
    **{kind: UnreachableFacts for kind in UNREACHABLE_KINDS.values()},
    "lock_pileup": LockPileupFacts,
    "idle_in_tx": SessionsFacts,
    "long_running": SessionsFacts,
    "connections": ConnectionsFacts,
    "xmin_horizon": XminHorizonFacts,
    "wal_receiver": WalReceiverFacts,
    "pool_waiting": PoolWaitingFacts,
    "wraparound": WraparoundFacts,
}

F = TypeVar("F", bound=Facts)


def facts_of(kind: str, data: Mapping[str, Any]) -> Facts:
    """The typed facts of a ``kind`` from what the rules (or the stored JSON) say. Values are taken as JSON
    would keep them (a datetime or an address becomes its text), as they were always stored. Facts that do
    not fit their kind's model (written by another release) are kept as they are, untyped."""
    return facts_from_json(kind, json.loads(json.dumps(dict(data), default=str)))


def facts_from_json(kind: str, plain: Mapping[str, Any]) -> Facts:
    """:func:`facts_of` for facts that are JSON already (as the state store reads them)."""
    cls = FACTS.get(kind, Facts)
    origin = unreachable_origin(kind)
    # the one unreachable kind: whose it is, from the name it is stored under (never itself stored)
    typed = {**plain, "origin": origin} if origin is not None else plain
    try:
        return cls.model_validate(typed)
    except ValidationError as exc:
        log.warning("incidents: the facts of a %s incident do not fit its model (%d errors): kept as stored",
                    kind, exc.error_count())
        return Facts.model_validate(plain)


def facts_json(facts: Facts) -> dict[str, Any]:
    """The facts as JSON (what is stored, and what the renderers draw from): exactly the fields given."""
    return facts.model_dump(mode="json", exclude_unset=True)


# --- the incident's record ---------------------------------------------------------------------------


class Ack(Frozen):
    """Who took the incident (a click on Acknowledge), and when (epoch seconds)."""

    by: str
    at: Num | None = None

    def as_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_unset=True)


class Seen(Frozen):
    """A session an alert named while it lasted (the lag watcher's culprits say what they held: ``kind``)."""

    pid: int | None = None
    backend_start: str | None = None
    user: str | None = None
    application: str | None = None
    kind: str | None = None

    @property
    def key(self) -> str:
        return f"{self.pid}@{self.backend_start}"


class IncidentPayload(Frozen):
    """Everything an incident keeps besides its columns (see the module's docstring)."""

    key: str = ""
    facts: SerializeAsAny[Facts] = Facts()
    ack: Ack | None = None
    ack_drawn: bool = False
    tokens: dict[str, str] = {}
    bulk: dict[str, str] | None = None
    seen: dict[str, Seen] = {}
    closed: str | None = None
    done: tuple[str, ...] | None = None

    def facts_as(self, cls: type[F]) -> F:
        """The facts as ``cls`` (those of the incident's kind), or ``cls``'s empty facts when they are not."""
        return self.facts if isinstance(self.facts, cls) else cls()

    def ack_json(self) -> dict[str, Any] | None:
        """The Acknowledge as the renderers take it."""
        return self.ack.as_json() if self.ack is not None else None

    def with_(self, **changes: Any) -> IncidentPayload:
        """A copy with ``changes`` (each counts as given: it is written)."""
        return self.model_copy(update=changes)
