"""How the lag watcher's alerts are drawn: a port (the composition root hands it :mod:`bot.render.lag`),
so the watcher imports neither ``render/`` nor Slack and escapes nothing itself."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from bot.config import LagAlert
from bot.lagwatch.model import StandbyLag


class Drawing(Protocol):
    """How lag alerts are drawn (:mod:`bot.render.lag`, given by the composition root): every text from a
    database is escaped there (``code``), never here."""

    @property
    def MAX_CULPRITS_SHOWN(self) -> int: ...

    def code(self, text: object) -> str: ...

    def slack_time(self, when: datetime | None) -> str: ...

    def section(self, text: str, **extra: Any) -> dict[str, Any]: ...

    def render_lag_alert(
        self, m: StandbyLag, alert: LagAlert, *, since: datetime | None, tokens: Mapping[int, str] | None = None,
        kill_disabled: str | None = None, query_chars: int = 300, reminder_every: float | None = None,
        details_tokens: Mapping[int, str] | None = None, incident_id: str | None = None,
        ack: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]: ...

    def render_lag_reminder(self, m: StandbyLag, *, opened_at: datetime, now: datetime) -> dict[str, Any]: ...

    def render_lag_resolved(
        self, env: str, host: str, *, opened_at: datetime, resolved_at: datetime, since: datetime | None,
        peak_secs: float | None, peak_bytes: int | None, reasons: Sequence[str], done: Sequence[str],
        last: StandbyLag | None = None, ack: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]: ...

    def render_unreachable_alert(
        self, env: str, host: str, reason: str, *, since: datetime, failures: int, check_every: float,
        now: datetime, incident_id: str | None = None, ack: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]: ...

    def render_unreachable_reminder(self, env: str, host: str, reason: str, *, since: datetime,
                                    now: datetime) -> dict[str, Any]: ...

    def render_unreachable_resolved(self, env: str, host: str, reason: str, *, since: datetime,
                                    resolved_at: datetime, ack: Mapping[str, Any] | None = None) -> dict[str, Any]: ...
