"""What to alert on: ``environments.<env>.lag_alert`` (standby replay lag) and ``environments.<env>.watch``
(session alerts, each kind off when absent)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field, field_validator

from bot.config.fields import Duration, Percent, Section


class LagAlert(Section):
    channel: str
    threshold: Duration = 30.0
    check_every: Duration = 30.0
    consecutive: int = Field(default=2, ge=1, le=100)
    remind_every: Duration = 900.0
    min_bytes: int = Field(default=0, ge=0)

    @field_validator("check_every")
    @classmethod
    def _every(cls, v: float) -> float:
        if v < 1:
            raise ValueError("check_every must be at least 1s")
        return v


class LockPileup(Section):
    waiters: int = Field(default=5, ge=1, le=100000)
    wait: Duration = 60.0


def _pool_waiting(v: Any) -> Any:
    """``pool_waiting: true`` is the default threshold (5 s on the longest wait); a duration sets it."""
    if v is True:
        return 5.0
    if v is False:
        return None
    return v


class Wraparound(Section):
    """``watch.wraparound``: transaction ID wraparound; an alert when a database's ``age(datfrozenxid)`` or
    ``mxid_age(datminmxid)`` reaches ``threshold`` transactions (PostgreSQL stops at about 2.1 billion)."""

    threshold: int = Field(default=1_000_000_000, ge=1, le=2_000_000_000)


class Watch(Section):
    """``environments.<env>.watch``: session alerts (issue 14); each kind is off when absent."""

    channel: str
    check_every: Duration = 30.0
    consecutive: int = Field(default=2, ge=1, le=100)
    remind_every: Duration = 900.0
    lock_pileup: LockPileup | None = None
    idle_in_transaction: Duration | None = None
    long_running: Duration | None = None
    connections: Percent | None = None
    xmin_horizon: Duration | None = None
    # clients waiting in a PgBouncer pool (issue 25): the longest wait that alerts (``true``: 5s)
    pool_waiting: Annotated[Duration | None, BeforeValidator(_pool_waiting)] = None
    wraparound: Wraparound | None = None

    @field_validator("check_every")
    @classmethod
    def _every(cls, v: float) -> float:
        if v < 1:
            raise ValueError("check_every must be at least 1s")
        return v

    @field_validator("connections")
    @classmethod
    def _share(cls, v: float | None) -> float | None:
        if v is not None and not 0 < v <= 100:
            raise ValueError("connections must be a percentage between 1% and 100%, e.g. 90%")
        return v
