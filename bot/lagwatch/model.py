"""What one check of one standby found: small frozen dataclasses, no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from bot.config import LagAlert
from bot.postgres.models import Session


class Reason(StrEnum):
    """Why replay is not keeping up, from the startup process's wait event (and pause state)."""

    NONE = "none"  # nothing to replay
    LOCK = "lock"  # Lock/relation: a standby session holds a lock replay needs
    SNAPSHOT = "snapshot"  # IPC/RecoveryConflictSnapshot: a snapshot still needs rows replay removes
    BUFFER_PIN = "buffer-pin"  # BufferPin/BufferPin: a query keeps a page pinned that replay must clean
    PAUSED = "paused"  # pg_wal_replay_pause()
    APPLY_DELAY = "apply-delay"  # recovery_min_apply_delay: the standby lags on purpose
    UNKNOWN = "unknown"  # replaying (I/O, CPU) or waiting on something else

    @property
    def label(self) -> str:
        return {
            Reason.NONE: "caught up",
            Reason.LOCK: "lock conflict",
            Reason.SNAPSHOT: "snapshot conflict",
            Reason.BUFFER_PIN: "buffer pin conflict",
            Reason.PAUSED: "replay is paused",
            Reason.APPLY_DELAY: "delayed on purpose (recovery_min_apply_delay)",
            Reason.UNKNOWN: "unknown",
        }[self]


def lsn_to_int(lsn: str | None) -> int | None:
    """``'16/B374D848'`` -> byte position; None stays None."""
    if not lsn:
        return None
    hi, _, lo = lsn.partition("/")
    return (int(hi, 16) << 32) + int(lo, 16)


@dataclass(frozen=True, slots=True)
class Culprit:
    """A standby session that holds replay back (or, for ``kind == 'suspect'``, may): the one
    :class:`~bot.postgres.models.Session` (its ``xmin_age`` too) and why it is named."""

    session: Session
    kind: str  # lock | snapshot | suspect
    why: str

    @property
    def key(self) -> str:
        """Identity across checks: pids are reused, (pid, backend_start) are not."""
        return self.session.key


@dataclass(frozen=True, slots=True)
class PrimaryView:
    """The primary's ``pg_stat_replication`` row for one standby."""

    measured_at: datetime
    application_name: str | None
    slot_name: str | None
    state: str | None
    sync_state: str | None
    client_addr: str | None
    replay_lag: float | None  # seconds; NULL is "unknown", not "broken"
    write_lag: float | None
    flush_lag: float | None
    behind_bytes: int | None  # primary's current WAL position minus the standby's replay position
    current_lsn: str | None
    replay_lsn: str | None


@dataclass(frozen=True, slots=True)
class ReceiverFacts:
    """What one check saw of a standby's WAL receiver: the session watch's WAL-receiver alert is moved
    by these for the standbys it does not read itself (environments with only ``lag_alert``)."""

    in_recovery: bool
    status: str | None  # pg_stat_wal_receiver.status; None: no WAL receiver running
    silent_secs: float | None  # since the last message from the primary


@dataclass(frozen=True, slots=True)
class StandbyLag:
    """One measurement of one standby."""

    env: str
    host: str
    measured_at: datetime
    in_recovery: bool
    receive_lsn: str | None
    replay_lsn: str | None
    lag_bytes: int  # received but not yet replayed
    replay_age: float | None  # seconds since the last replayed transaction committed on the primary
    last_replay_at: datetime | None
    replay_paused: bool
    receiver_status: str | None
    slot_name: str | None
    wal_receiver_name: str | None
    max_standby_streaming_delay: str | None
    recovery_min_apply_delay: str | None
    startup_pid: int | None
    startup_wait: str | None  # "Lock/relation", "IPC/RecoveryConflictSnapshot", ...
    reason: Reason
    culprits: tuple[Culprit, ...] = ()
    suspects: tuple[Culprit, ...] = ()
    primary: PrimaryView | None = None
    server_version: str | None = None
    apply_delay_secs: float = 0.0  # recovery_min_apply_delay: lag the standby keeps on purpose
    receiver_silent_secs: float | None = None  # since the WAL receiver's last message from the primary
    ignored: int = 0  # sessions that may hold replay back but match the environment's ``ignore`` (not named)

    @property
    def receiver(self) -> ReceiverFacts:
        return ReceiverFacts(self.in_recovery, self.receiver_status, self.receiver_silent_secs)

    @property
    def behind(self) -> bool:
        """Received WAL is waiting to be replayed (the only time a time lag means anything)."""
        return self.in_recovery and self.lag_bytes > 0

    @property
    def lag_secs(self) -> float | None:
        """How far behind in time: 0 when nothing waits to be replayed.

        The primary's replay_lag is the better estimate (it does not count the time the primary was
        idle before the stuck WAL was written); when it is unknown, the age of the last replayed
        transaction.
        """
        if not self.behind:
            return 0.0
        if self.primary is not None and self.primary.replay_lag is not None:
            return max(0.0, self.primary.replay_lag)
        if self.replay_age is not None:
            return max(0.0, self.replay_age)
        return None

    @property
    def since(self) -> datetime | None:
        secs = self.lag_secs
        if not self.behind or secs is None:
            return None
        return self.measured_at - timedelta(seconds=secs)

    def above(self, alert: LagAlert) -> bool:
        """Over the alert's threshold in time and bytes. A delayed standby (recovery_min_apply_delay)
        is only over it by what it lags beyond its configured delay."""
        secs = self.lag_secs
        return (
            self.behind
            and self.lag_bytes >= alert.min_bytes
            and secs is not None
            and secs - self.apply_delay_secs >= alert.threshold
        )

    @property
    def holding_back(self) -> tuple[Culprit, ...]:
        """Direct culprits, else suspects."""
        return self.culprits or self.suspects

    @property
    def waits_forever(self) -> bool:
        return (self.max_standby_streaming_delay or "").strip() == "-1"


@dataclass(frozen=True, slots=True)
class Unreachable:
    """A check that could not reach the standby (``reason`` is safe to show)."""

    env: str
    host: str
    reason: str
    at: datetime
    unsupported: bool = False  # it answered, but its PostgreSQL is too old: refused, not unreachable
