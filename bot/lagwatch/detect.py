"""Measuring one standby: how far behind, why, and which of its sessions hold replay back.

:func:`measure_standby` is the one entry point; it raises
:class:`~bot.postgres.pools.DatabaseUnavailable` when the standby cannot be reached (bounded by the
environment's connect and statement timeouts).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from bot.durations import format_duration
from bot.lagwatch.model import Culprit, PrimaryView, Reason, StandbyLag, Unreachable
from bot.postgres.lag import culprit_session, read_culprit_rows, read_replication, read_standby
from bot.postgres.models import Session
from bot.postgres.pools import Databases, DatabaseUnavailable, UnsupportedServer
from bot.postgres.relnames import name_lock_objects
from bot.session_rules import is_ignored

MAX_CULPRITS = 50  # lag_culprits.sql returns at most 50 rows


def classify(wait_event_type: str | None, wait_event: str | None, paused: bool, behind: bool) -> Reason:
    """Why replay waits, from the startup process's wait event (measured on PostgreSQL 15)."""
    if paused:
        return Reason.PAUSED
    if not behind:
        return Reason.NONE
    if wait_event_type == "Lock":
        return Reason.LOCK
    if wait_event == "RecoveryConflictSnapshot":
        return Reason.SNAPSHOT
    if wait_event_type == "BufferPin":
        return Reason.BUFFER_PIN
    if wait_event == "RecoveryApplyDelay":
        return Reason.APPLY_DELAY
    if wait_event == "RecoveryPause":
        return Reason.PAUSED
    return Reason.UNKNOWN


def _lock_why(row: dict[str, Any]) -> str:
    objects = row.get("lock_objects") or "an object"
    return (
        f"holds {row.get('lock_modes') or 'a lock'} on {objects}; replay needs "
        f"{row.get('wanted_modes') or 'AccessExclusiveLock'} on it"
    )


def _snapshot_why(row: dict[str, Any]) -> str:
    behind = row.get("xmin_behind")
    older = ""
    if behind is not None and behind > 0:
        older = f", {behind} transaction{'s' if behind != 1 else ''} older than a fresh snapshot"
    return f"its snapshot (xmin {row.get('backend_xmin')}{older}) may still see rows that replay must remove"


def _suspect_why(row: dict[str, Any]) -> str:
    parts = []
    if row.get("holds_lock"):
        parts.append(_lock_why(row))
    if row.get("old_snapshot"):
        parts.append(_snapshot_why(row))
    if not parts:
        secs = row.get("xact_secs") if row.get("xact_secs") is not None else row.get("query_secs")
        parts.append(f"transaction open for {format_duration(secs)}")
    return "; ".join(parts)


def pick_culprits(
    reason: Reason, rows: Iterable[dict[str, Any]], redact_queries: bool = False
) -> tuple[tuple[Culprit, ...], tuple[Culprit, ...]]:
    """(direct culprits, suspects) for a reason: lock holders for a lock conflict, old snapshots for a
    snapshot conflict; every flagged row is a suspect when no direct culprit is found."""
    rows = list(rows)
    direct: list[Culprit] = []
    if reason == Reason.LOCK:
        direct = [
            Culprit(culprit_session(r, holding_back=True, redact_queries=redact_queries), "lock", _lock_why(r))
            for r in rows
            if r["holds_lock"]
        ]
    elif reason == Reason.SNAPSHOT:
        snap = sorted((r for r in rows if r["old_snapshot"]), key=lambda r: -(r.get("xmin_age") or 0))
        direct = [
            Culprit(
                culprit_session(r, holding_back=True, redact_queries=redact_queries),
                "snapshot",
                _snapshot_why(r),
            )
            for r in snap
        ]
    if direct:
        return tuple(direct[:MAX_CULPRITS]), ()
    if reason in (Reason.NONE, Reason.PAUSED, Reason.APPLY_DELAY):
        return (), ()
    suspects = sorted(
        rows,
        key=lambda r: (
            not r["holds_lock"],
            not r["old_snapshot"],
            -(r.get("xmin_age") or 0),
            -(r.get("xact_secs") or r.get("query_secs") or 0),
        ),
    )
    return (), tuple(
        Culprit(
            culprit_session(r, holding_back=False, redact_queries=redact_queries),
            "suspect",
            _suspect_why(r),
        )
        for r in suspects[:MAX_CULPRITS]
    )


def fresh_replay_lag(replay_lag: float | None, behind_bytes: int | None, reply_time: datetime | None,
                     measured_at: datetime | None) -> float | None:
    """The primary's ``replay_lag`` brought up to ``measured_at``.

    ``replay_lag`` moves only when the standby reports (every ``wal_receiver_status_interval``, 10 s by
    default): while replay is behind, the lag has grown by the time since that report (``reply_time``).
    Without this, an alert could come up to one status interval late.
    """
    if replay_lag is None or not behind_bytes or reply_time is None or measured_at is None:
        return replay_lag
    return replay_lag + max(0.0, (measured_at - reply_time).total_seconds())


def as_of(view: PrimaryView | None, standby_lag: float | None, measured_at: datetime) -> PrimaryView | None:
    """The primary's view aged to the standby's own measurement (its ``replay_lag`` grows while behind),
    never beyond what the standby's own reading allows (the age of its last replayed transaction)."""
    if view is None or view.replay_lag is None or not view.behind_bytes:
        return view
    lag = view.replay_lag + max(0.0, (measured_at - view.measured_at).total_seconds())
    if standby_lag is not None:
        lag = min(lag, standby_lag)
    return replace(view, replay_lag=lag)


def primary_views(dbs: Databases, env: str) -> list[PrimaryView]:
    """The primary's view of every standby (``pg_stat_replication``), ``replay_lag`` as of the read."""
    with dbs.connection(env, "primary") as conn:
        rows = read_replication(conn)
    return [
        PrimaryView(
            measured_at=r["measured_at"],
            application_name=r["application_name"],
            slot_name=r["slot_name"],
            state=r["state"],
            sync_state=r["sync_state"],
            client_addr=r["client_addr"],
            replay_lag=fresh_replay_lag(r["replay_lag"], r["behind_bytes"], r.get("reply_time"), r["measured_at"]),
            write_lag=r["write_lag"],
            flush_lag=r["flush_lag"],
            behind_bytes=r["behind_bytes"],
            current_lsn=r["current_lsn"],
            replay_lsn=r["replay_lsn"],
        )
        for r in rows
    ]


def match_primary_view(
    views: Iterable[PrimaryView], slot_name: str | None, receiver_name: str | None
) -> PrimaryView | None:
    """The primary's row for a standby: by replication slot, else by application name."""
    views = list(views)
    if slot_name:
        for v in views:
            if v.slot_name == slot_name:
                return v
    if receiver_name:
        named = [v for v in views if v.application_name == receiver_name]
        if len(named) == 1:
            return named[0]
    return None


def measure_standby(
    dbs: Databases,
    env: str,
    host: str,
    primary: Iterable[PrimaryView] | None = None,
    *,
    with_culprits: bool = True,
) -> StandbyLag:
    """Measure one standby; look for culprits only while received WAL waits to be replayed."""
    environment = dbs.config.environments[env]
    alert = environment.lag_alert
    suspect_secs = alert.threshold if alert is not None else environment.thresholds.long_running
    culprit_rows: list[dict[str, Any]] = []
    with dbs.connection(env, host) as conn:
        row = read_standby(conn)
        in_recovery = bool(row["in_recovery"])
        lag_bytes = int(row["lag_bytes"] or 0)
        behind = in_recovery and lag_bytes > 0
        reason = classify(row["startup_wait_event_type"], row["startup_wait_event"], bool(row["replay_paused"]), behind)
        if behind and with_culprits:
            culprit_rows = read_culprit_rows(
                conn, row["startup_pid"], suspect_secs, max(environment.listing.query_chars * 2, 600)
            )
    # ignore: a session it names is never named as a culprit nor offered buttons (the lag is still alerted:
    # the standby is behind whoever holds it); the alert says how many were left out
    ignored = 0
    if culprit_rows and environment.ignore:
        kept = [r for r in culprit_rows if not is_ignored(environment.ignore, app=r.get("application_name"),
                                                          user=r.get("usename"), db=r.get("datname"),
                                                          query=r.get("query"))]
        ignored, culprit_rows = len(culprit_rows) - len(kept), kept
    if culprit_rows:  # relations of other databases by name, through those databases (bounded, cached)
        name_lock_objects(dbs.config, env, host, culprit_rows)
    culprits, suspects = pick_culprits(reason, culprit_rows, environment.redact_queries) if behind else ((), ())
    wait = None
    if row["startup_wait_event_type"] or row["startup_wait_event"]:
        wait = f"{row['startup_wait_event_type'] or '?'}/{row['startup_wait_event'] or '?'}"
    measured_at = row["measured_at"] or datetime.now(UTC)
    view = as_of(match_primary_view(primary or (), row["slot_name"], row["wal_receiver_name"]),
                 row["replay_age"], measured_at)
    return StandbyLag(
        env=env,
        host=host,
        measured_at=row["measured_at"] or datetime.now(UTC),
        in_recovery=in_recovery,
        receive_lsn=row["receive_lsn"],
        replay_lsn=row["replay_lsn"],
        lag_bytes=lag_bytes,
        replay_age=row["replay_age"],
        last_replay_at=row["last_replay_at"],
        replay_paused=bool(row["replay_paused"]),
        receiver_status=row["receiver_status"],
        receiver_silent_secs=row["receiver_silent_secs"],
        slot_name=row["slot_name"],
        wal_receiver_name=row["wal_receiver_name"],
        max_standby_streaming_delay=row["max_standby_streaming_delay"],
        recovery_min_apply_delay=row["recovery_min_apply_delay"],
        apply_delay_secs=float(row["apply_delay_secs"] or 0.0),
        startup_pid=row["startup_pid"],
        startup_wait=wait,
        reason=reason,
        culprits=culprits,
        suspects=suspects,
        primary=view,
        server_version=row["server_version"],
        ignored=ignored,
    )


def mark_culprits(m: StandbyLag, mark: Callable[[list[Session]], list[Session]]) -> StandbyLag:
    """``m`` with its culprits' and suspects' sessions passed through ``mark`` (the access policy's
    :meth:`~bot.approval.policy.Policy.mark`: ``cannot_signal`` says why for protected sessions)."""
    if not m.culprits and not m.suspects:
        return m

    def each(cs: tuple[Culprit, ...]) -> tuple[Culprit, ...]:
        marked = mark([c.session for c in cs])
        return tuple(replace(c, session=s) for c, s in zip(cs, marked, strict=True))

    return replace(m, culprits=each(m.culprits), suspects=each(m.suspects))


def measure_env(dbs: Databases, env: str) -> tuple[list[StandbyLag | Unreachable], str | None]:
    """Every standby of an environment at once (for ``/pgsessions <env> lag``), each bounded by its own
    timeouts, with the primary's view attached; returns (results in config order, primary error)."""
    hosts = list(dbs.config.environments[env].standbys)
    results: list[StandbyLag | Unreachable] = []
    primary_error = None
    if not hosts:
        return results, None
    with ThreadPoolExecutor(max_workers=len(hosts) + 1, thread_name_prefix="pgs-lag") as pool:
        pf = pool.submit(primary_views, dbs, env)
        futures = {h: pool.submit(measure_standby, dbs, env, h) for h in hosts}
        try:
            views = pf.result()
        except DatabaseUnavailable as exc:
            views, primary_error = [], exc.reason
        for host, fut in futures.items():
            try:
                m = fut.result()
            except DatabaseUnavailable as exc:
                results.append(Unreachable(env, host, exc.reason, datetime.now(UTC),
                                           unsupported=isinstance(exc, UnsupportedServer)))
                continue
            view = match_primary_view(views, m.slot_name, m.wal_receiver_name)
            results.append(replace(m, primary=as_of(view, m.replay_age, m.measured_at)))
    return results, primary_error
