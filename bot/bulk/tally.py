"""The pure rules of a bulk execution: what each session's verdict means, and the request's outcome.

No database and no Slack here (:mod:`bot.bulk.execute` is the shell that signals and records):
:func:`verdict_detail` turns one row of the terminate statement into a result and the sentence shown
for it, :class:`Tally` counts results, :func:`finish` makes the request's outcome.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from bot.approval.models import BulkOutcome, ItemResult, OutcomeStatus, SessionRef
from bot.durations import format_duration

MAX_LISTED = 15  # per-session lines kept in the outcome (the audit log has them all)

RESULT_WORDS = {
    "ended": "ended",
    "gone": "had already gone",
    "skipped": "skipped",
    "failed": "could not be signalled",
    "not_done": "signalled but still connected",
    "not_attempted": "not attempted",
}


class VerdictRow(Protocol):
    @property
    def verdict(self) -> str: ...
    @property
    def state(self) -> str | None: ...
    @property
    def state_secs(self) -> float | None: ...
    @property
    def signalled(self) -> bool | None: ...


def verdict_detail(row: VerdictRow, expected: str | None, protected: str | None = None) -> tuple[str, str]:
    """(result, sentence) for one session the terminate statement saw; result ``signal`` means it was
    signalled and must now be watched until it ends. ``protected``: why the protect rules name it."""
    v = row.verdict
    if v == "protected_rule":
        return "skipped", f"{protected or 'protected (protect)'}: never terminated"
    if v == "gone":
        return "gone", "had already ended (or its pid now belongs to another backend): not touched"
    if v == "protected":
        return "skipped", "the bot's own connection: never terminated"
    if v == "moved":
        return "skipped", "is no longer on the approved database: not touched"
    if v == "skipped_state":
        now = row.state or "?"
        what = "active again" if now == "active" else f"now {now}"
        return "skipped", f"skipped: {what} (approved while {expected or 'listed'})"
    if v == "skipped_used":
        since = f" {format_duration(row.state_secs)} ago" if row.state_secs is not None else ""
        return "skipped", f"skipped: used again since the listing (last change{since}, now {row.state or '?'})"
    if v == "refused_super":
        return "failed", "superuser session (the bot's role is not a superuser)"
    if v == "refused_role":
        return "failed", "the bot's role is not a member of pg_signal_backend"
    if v == "signal" and not row.signalled:
        return "gone", "had already ended when signalled"
    return "signal", ""


@dataclass
class Tally:
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RESULT_WORDS, 0))
    problems: list[ItemResult] = field(default_factory=list)
    skipped: list[ItemResult] = field(default_factory=list)
    reasons: dict[str, int] = field(default_factory=dict)
    stopped: str | None = None

    def add(self, s: SessionRef, result: str, detail: str) -> ItemResult:
        self.counts[result] += 1
        item = ItemResult(pid=s.pid, user=s.user, application=s.application, result=detail)
        if result == "skipped" and len(self.skipped) < MAX_LISTED:
            self.skipped.append(item)
        if result in ("failed", "not_done", "not_attempted"):
            self.reasons[detail] = self.reasons.get(detail, 0) + 1
            if len(self.problems) < MAX_LISTED:
                self.problems.append(item)
        return item

    @property
    def clean(self) -> bool:
        return not (self.counts["failed"] or self.counts["not_done"] or self.counts["not_attempted"])

    def summary(self) -> str:
        parts = [f"{n} {RESULT_WORDS[k]}" for k, n in self.counts.items() if n or k in ("ended", "gone")]
        return " · ".join(parts)

    def counts_with(self, rows: list[tuple[SessionRef, str, str]]) -> dict[str, int]:
        counts = dict(self.counts)
        for _, r, _ in rows:
            counts[r] += 1
        return counts


def finish(
    tally: Tally,
    started: float,
    status: OutcomeStatus | None = None,
    detail: str | None = None,
    **notes: Any,
) -> BulkOutcome:
    """The outcome of a bulk request: ``status`` (done when nothing went wrong, else partial), the
    detail (the tally's summary and its three most frequent problems), counts and listed items."""
    status = status or (OutcomeStatus.DONE if tally.clean else OutcomeStatus.PARTIAL)
    detail = detail or tally.summary()
    if tally.reasons:
        worst = sorted(tally.reasons.items(), key=lambda kv: -kv[1])[:3]
        detail += " (" + "; ".join(f"{n}× {why}" for why, n in worst) + ")"
    return BulkOutcome(
        status=status,
        detail=detail,
        counts=dict(tally.counts),
        problems=tuple(tally.problems),
        skipped=tuple(tally.skipped),
        finished_at=time.time(),
        duration_s=round(time.monotonic() - started, 3),
        **notes,
    )
