"""How the session watch's alerts are drawn: a port (the composition root hands it :mod:`bot.render.watch`),
so the watcher imports neither ``render/`` nor Slack and escapes nothing itself."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol


class Drawing(Protocol):
    """How the watch's alerts are drawn (:mod:`bot.render.watch`, given by the composition root): the
    domain never draws nor escapes."""

    def render_alert(
        self, kind: str, env: str, host: str, facts: Mapping[str, Any], *, incident_id: str, opened_at: float,
        now: float, tokens: Mapping[int, str] | None = None, details_tokens: Mapping[int, str] | None = None,
        bulk_token: str | None = None, bulk_sessions: Sequence[Mapping[str, Any]] = (),
        kill_disabled: str | None = None, ack: Mapping[str, Any] | None = None, query_chars: int = 300,
        remind_every: float = 900.0,
    ) -> dict[str, Any]: ...

    def render_reminder(self, kind: str, env: str, host: str, facts: Mapping[str, Any], *, opened_at: float,
                        now: float) -> dict[str, Any]: ...

    def render_resolved(self, kind: str, env: str, host: str, facts: Mapping[str, Any], *, opened_at: float,
                        resolved_at: float, done: Sequence[str],
                        ack: Mapping[str, Any] | None = None) -> dict[str, Any]: ...

    def render_closed(self, kind: str, env: str, host: str, why: str) -> dict[str, Any]: ...
