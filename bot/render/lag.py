"""Rendering the lag watcher's messages: the alert, its updates, reminders, resolution, and the
``/pgsessions <env> lag`` overview. Pure functions from :mod:`bot.lagwatch.model` to Block Kit dicts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from bot.config import LagAlert
from bot.durations import format_bytes, format_duration
from bot.lagwatch.model import Culprit, Reason, StandbyLag, Unreachable
from bot.render.buttons import session_buttons
from bot.render.common import (
    MAX_BLOCKS,
    context,
    cut,
    esc,
    fold_query,
    header,
    message,
)
from bot.render.common import code as code
from bot.render.common import section as section
from bot.render.common import slack_time as slack_time
from bot.render.watch import acknowledge_block

MAX_CULPRITS_SHOWN = 10

REASON_EMOJI = {
    Reason.NONE: ":white_check_mark:",
    Reason.LOCK: ":lock:",
    Reason.SNAPSHOT: ":camera_with_flash:",
    Reason.BUFFER_PIN: ":pushpin:",
    Reason.PAUSED: ":double_vertical_bar:",
    Reason.APPLY_DELAY: ":hourglass:",
    Reason.UNKNOWN: ":grey_question:",
}


def target(env: str, host: str) -> str:
    return f"{env} / {host}"


def lag_amount(m: StandbyLag) -> str:
    """'2m 10s behind (5.4 MB received, not yet replayed)'."""
    secs = m.lag_secs
    when = format_duration(secs) if secs is not None else "an unknown time"
    return f"{when} behind ({format_bytes(m.lag_bytes)} received, not yet replayed)"


def why_text(m: StandbyLag) -> str:
    """The reason paragraph: which conflict, what the startup process waits on, what that means."""
    wait = f" (startup process pid {m.startup_pid} waits on {code(m.startup_wait)})" if m.startup_wait else ""
    emoji = REASON_EMOJI[m.reason]
    if m.reason == Reason.LOCK:
        text = f"{emoji} *Why: lock conflict.* Replay needs a lock that a session on the standby holds{wait}."
    elif m.reason == Reason.SNAPSHOT:
        text = (
            f"{emoji} *Why: snapshot conflict.* Replay must remove row versions that a snapshot on the "
            f"standby may still see{wait}."
        )
    elif m.reason == Reason.BUFFER_PIN:
        text = f"{emoji} *Why: buffer pin conflict.* Replay must clean a page that a standby query keeps pinned{wait}."
    elif m.reason == Reason.PAUSED:
        text = (
            f"{emoji} *Why: replay is paused* (`pg_wal_replay_pause()`). Resume it with "
            "`SELECT pg_wal_replay_resume()` on the standby."
        )
    elif m.reason == Reason.APPLY_DELAY:
        text = (
            f"{emoji} *Why: delayed on purpose:* `recovery_min_apply_delay = "
            f"{esc(m.recovery_min_apply_delay or '?')}`; alerts count only the lag beyond it."
        )
    elif m.reason == Reason.NONE:
        text = f"{emoji} Nothing is waiting to be replayed."
    else:
        text = (
            f"{emoji} *Why: unknown.* The startup process is not waiting on a recovery conflict{wait}: replay "
            "may be busy (I/O, CPU, a large operation) or waiting on something else."
        )
    if m.reason in (Reason.LOCK, Reason.SNAPSHOT, Reason.BUFFER_PIN):
        if m.waits_forever:
            text += (
                "\n`max_standby_streaming_delay = -1`: replay waits for these sessions for as long as they run."
            )
        elif m.max_standby_streaming_delay:
            text += (
                f"\nPostgreSQL cancels the conflicting queries after `max_standby_streaming_delay = "
                f"{esc(m.max_standby_streaming_delay)}`."
            )
    if m.receiver_status and m.receiver_status != "streaming":
        text += f"\n:warning: WAL receiver status: {code(m.receiver_status)}."
    return text


def primary_text(m: StandbyLag) -> str:
    p = m.primary
    if p is None:
        return "Primary's view: not available (no matching row in `pg_stat_replication` or the primary was not read)"
    lag = format_duration(p.replay_lag) if p.replay_lag is not None else "not reported yet"
    parts = [f"Primary's view: state {esc(p.state or '?')}"]
    if p.behind_bytes is not None:
        parts.append(f"{format_bytes(p.behind_bytes)} behind the primary's current WAL")
    # once the standby has caught up, replay_lag shows the last measured value for a while
    parts.append(f"replay_lag {lag}" if m.behind else f"last measured replay_lag {lag}")
    return " · ".join(parts)


def culprit_text(c: Culprit, query_chars: int = 300) -> str:
    s = c.session
    who = [
        f"*pid {s.pid}*",
        f"user {code(s.user or '?')}",
        f"db {code(s.database or '?')}",
        f"app {code(s.application) if s.application else '–'}",
        f"client {code(s.client_addr) if s.client_addr else 'local socket'}",
    ]
    what, secs = s.duration
    if what == s.state:
        state = f"{esc(what)} {format_duration(secs)}"
    else:
        state = f"{esc(s.state or '?')} · {what} {format_duration(secs)}"
    if s.xact_secs is not None:
        state += f" · transaction open {format_duration(s.xact_secs)}"
    icon = {"lock": ":lock:", "snapshot": ":camera_with_flash:"}.get(c.kind, ":mag:")
    lines = [" · ".join(who), state, f"{icon} {code(c.why)}"]  # the why names relations: a code span
    if s.query:
        lines.append(f"{code(fold_query(s.query, query_chars))}")
    return "\n".join(lines)


def _culprit_blocks(
    culprits: Sequence[Culprit],
    budget: int,
    tokens: Mapping[int, str],
    kill_disabled: str | None,
    query_chars: int,
    buttons: bool = True,
    details_tokens: Mapping[int, str] | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """Blocks for as many culprits as fit in ``budget`` (keeping one for the 'more' note)."""
    blocks: list[dict[str, Any]] = []
    shown = 0
    for c in list(culprits)[:MAX_CULPRITS_SHOWN]:
        part = [section(culprit_text(c, query_chars))]
        if buttons:
            part += session_buttons(
                c.session, tokens.get(c.session.pid), kill_disabled, (details_tokens or {}).get(c.session.pid)
            )
        if len(blocks) + len(part) > budget - 1:
            break
        blocks += part
        shown += 1
    if shown < len(culprits):
        blocks.append(context(f"{len(culprits) - shown} more not shown: `/pgsessions` on the standby lists them all."))
    return blocks, shown


def culprit_heading(m: StandbyLag) -> str:
    ignored = ignored_note(m)
    if m.culprits:
        n = len(m.culprits)
        return f"*Holding replay back* ({n} session{'s' if n != 1 else ''}):" + (f" {ignored}" if ignored else "")
    if m.suspects:
        return "*No direct culprit found.* Longest-running transactions on the standby (suspects):" + (
            f" {ignored}" if ignored else "")
    if ignored:
        return f"_No session on the standby looks responsible_ besides those left out: {ignored}"
    return "_No session on the standby looks responsible._"


def ignored_note(m: StandbyLag) -> str:
    """How many sessions that may hold replay back are not named because the ``ignore`` rules match them."""
    n = m.ignored
    if not n:
        return ""
    return f"(:see_no_evil: {n} more {'matches' if n == 1 else 'match'} the environment's `ignore` rules, not shown)"


def render_lag_alert(
    m: StandbyLag,
    alert: LagAlert,
    *,
    since: datetime | None,
    tokens: Mapping[int, str] | None = None,
    kill_disabled: str | None = None,
    query_chars: int = 300,
    reminder_every: float | None = None,
    details_tokens: Mapping[int, str] | None = None,
    incident_id: str | None = None,
    ack: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The alert (and its in-place updates) for a standby whose replay lag is over the threshold.

    With ``incident_id``, the alert carries the Acknowledge button (or says who acknowledged it)."""
    tokens = tokens or {}
    blocks = [
        header(f":rotating_light: Replication lag on {target(m.env, m.host)}"),
        section(
            f"*Standby {code(m.host)} of {code(m.env)} is {lag_amount(m)}.*\n"
            f"Behind since {slack_time(since)} · threshold {format_duration(alert.threshold)}"
            + (f" and {format_bytes(alert.min_bytes)}" if alert.min_bytes else "")
        ),
        section(why_text(m)),
    ]
    reminders = ""
    if reminder_every and not ack:
        reminders = f"; reminders every {format_duration(reminder_every)} in the thread"
        reminders += " until acknowledged" if incident_id else ""
    footer = context(
        primary_text(m),
        f"Checked every {format_duration(alert.check_every)} · updated {slack_time(m.measured_at)} · "
        f"this message is edited at most once a minute{reminders}",
    )
    tail = ([acknowledge_block(incident_id, ack)] if incident_id else []) + [footer]
    holding = m.holding_back
    blocks.append(section(culprit_heading(m)))
    budget = MAX_BLOCKS - len(blocks) - len(tail)
    culprit_blocks, _ = _culprit_blocks(
        holding, budget, tokens, kill_disabled, query_chars, details_tokens=details_tokens
    )
    blocks += culprit_blocks
    blocks += tail
    pids = ", ".join(str(c.session.pid) for c in holding[:MAX_CULPRITS_SHOWN])
    held = f"; held back by pid {pids}" if m.culprits else (f"; suspects: pid {pids}" if pids else "")
    text = f"Replication lag on {target(m.env, m.host)}: {lag_amount(m)}, {m.reason.label}{held}"
    return message(text, blocks)


def render_lag_reminder(m: StandbyLag, *, opened_at: datetime, now: datetime) -> dict[str, Any]:
    """A reminder in the alert's thread while the incident lasts (no buttons: they are in the alert)."""
    pids = ", ".join(f"pid {c.session.pid}" for c in m.holding_back[:MAX_CULPRITS_SHOWN])
    who = ""
    if m.culprits:
        who = f" Held back by {pids} (buttons in the alert above)."
    elif pids:
        who = f" Suspects: {pids}."
    text = (
        f":bell: Still {lag_amount(m)} on {target(m.env, m.host)}, {m.reason.label}; "
        f"open for {format_duration((now - opened_at).total_seconds())}.{who} "
        "Acknowledge the alert to stop these reminders."
    )
    return message(text, [section(esc_keep(text))])


def esc_keep(text: str) -> str:
    """Text we wrote ourselves with mrkdwn in it: only cut it to the section limit."""
    return cut(text, 3000)


def render_lag_resolved(
    env: str,
    host: str,
    *,
    opened_at: datetime,
    resolved_at: datetime,
    since: datetime | None,
    peak_secs: float | None,
    peak_bytes: int | None,
    reasons: Sequence[str],
    done: Sequence[str],
    last: StandbyLag | None = None,
    ack: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The alert edited once lag is back under the threshold: how long, how bad, why, what was done."""
    start = since or opened_at
    lasted = format_duration((resolved_at - start).total_seconds())
    blocks = [
        header(f":white_check_mark: Resolved: replication lag on {target(env, host)}"),
        section(
            f"*Standby {code(host)} of {code(env)} caught up* at {slack_time(resolved_at)}.\n"
            f"Lasted {lasted} (behind since {slack_time(start)}; alert opened {slack_time(opened_at)}). "
            f"Worst: {format_duration(peak_secs)} behind, {format_bytes(peak_bytes)} waiting to be replayed."
        ),
    ]
    if ack:
        blocks.append(context(f":eyes: Acknowledged by <@{ack['by']}>"))
    if reasons:
        blocks.append(section("*Why it was behind:* " + esc(", ".join(reasons))))
    if done:
        # each line is mrkdwn the watcher wrote, with every database string already escaped
        lines = "\n".join(f"• {d}" for d in done[:20])
        blocks.append(section(f"*What was done:*\n{lines}"))
    else:
        blocks.append(section("*What was done:* nothing through the bot; replay caught up by itself."))
    if last is not None:
        now = "now 0 B waiting" if not last.behind else f"now {lag_amount(last)}"
        blocks.append(context(f"Last check {slack_time(last.measured_at)}: {now}."))
    text = f"Resolved: replication lag on {target(env, host)} after {lasted}"
    return message(text, blocks)


def render_unreachable_alert(
    env: str, host: str, reason: str, *, since: datetime, failures: int, check_every: float, now: datetime,
    incident_id: str | None = None, ack: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    blocks = [
        header(f":electric_plug: Standby unreachable: {target(env, host)}"),
        section(
            f"*The bot cannot check standby {code(host)} of {code(env)}:* {esc(reason)}.\n"
            f"Failing since {slack_time(since)} ({failures} checks in a row). Its replay lag is unknown "
            "while it cannot be reached."
        ),
        *([acknowledge_block(incident_id, ack)] if incident_id else []),
        context(f"Checked every {format_duration(check_every)} · updated {slack_time(now)}"),
    ]
    return message(f"Standby unreachable: {target(env, host)}: {esc(reason)}", blocks)


def render_unreachable_reminder(env: str, host: str, reason: str, *, since: datetime, now: datetime) -> dict[str, Any]:
    text = (
        f":bell: Still cannot reach {target(env, host)} ({esc(reason)}); failing for "
        f"{format_duration((now - since).total_seconds())}. Acknowledge the alert to stop these reminders."
    )
    return message(text, [section(text)])


def render_unreachable_resolved(env: str, host: str, reason: str, *, since: datetime, resolved_at: datetime,
                                ack: Mapping[str, Any] | None = None) -> dict[str, Any]:
    lasted = format_duration((resolved_at - since).total_seconds())
    blocks = [
        header(f":white_check_mark: Resolved: standby {target(env, host)} is reachable again"),
        section(
            f"*Standby {code(host)} of {code(env)} answers again* since {slack_time(resolved_at)}, "
            f"after {lasted} (from {slack_time(since)}).\nLast error: {esc(reason)}."
        ),
    ]
    if ack:
        blocks.append(context(f":eyes: Acknowledged by <@{ack['by']}>"))
    return message(f"Resolved: standby {target(env, host)} is reachable again after {lasted}", blocks)


def _status_line(m: StandbyLag, alert: LagAlert | None) -> str:
    if not m.in_recovery:
        return f":warning: *{esc(m.host)}* is not in recovery: it is not a standby (promoted?)"
    if m.replay_paused:
        return f"{REASON_EMOJI[Reason.PAUSED]} *{esc(m.host)}* replay is paused · {format_bytes(m.lag_bytes)} waiting"
    if not m.behind:
        age = f"; last transaction replayed {format_duration(m.replay_age)} ago" if m.replay_age is not None else ""
        return f":white_check_mark: *{esc(m.host)}* caught up (0 B waiting to be replayed{age})"
    over = alert is not None and m.above(alert)
    icon = ":rotating_light:" if over else ":hourglass_flowing_sand:"
    return f"{icon} *{esc(m.host)}* {lag_amount(m)} · {m.reason.label}"


def render_lag_listing(
    env: str,
    results: Sequence[StandbyLag | Unreachable],
    *,
    alert: LagAlert | None = None,
    tokens: Mapping[tuple[str, int], str] | None = None,
    kill_disabled: str | None = None,
    query_chars: int = 300,
    primary_error: str | None = None,
    details_tokens: Mapping[tuple[str, int], str] | None = None,
) -> dict[str, Any]:
    """``/pgsessions <env> lag``: every standby's lag, why it is behind and who holds it back."""
    tokens = tokens or {}
    blocks: list[dict[str, Any]] = [header(f"Replication lag on {env}")]
    summary: list[str] = []
    # first pass: one section per standby (always shown), then culprits while blocks remain
    per_host: list[tuple[StandbyLag | Unreachable, dict[str, Any]]] = []
    for r in results:
        if isinstance(r, Unreachable):
            line = (f":no_entry: *{esc(r.host)}*: {esc(r.reason)}" if r.unsupported
                    else f":electric_plug: *{esc(r.host)}* unreachable: {esc(r.reason)}")
            summary.append(f"{r.host}: {'not supported' if r.unsupported else 'unreachable'}")
        else:
            line = _status_line(r, alert)
            detail = []
            if r.behind:
                detail.append(why_text(r))
            detail.append(primary_text(r))
            if r.receiver_status and r.receiver_status != "streaming" and not r.behind:
                detail.append(f":warning: WAL receiver status: {code(r.receiver_status)}")
            line += "\n" + "\n".join(detail)
            summary.append(
                f"{r.host}: {format_duration(r.lag_secs)} / {format_bytes(r.lag_bytes)}" if r.behind else f"{r.host}: caught up"
            )
        per_host.append((r, section(line)))
    reserve = len(per_host) + 2  # the sections and the footer
    for r, sec in per_host:
        blocks.append(sec)
        reserve -= 1
        if isinstance(r, StandbyLag) and r.behind and (r.holding_back or r.ignored):
            budget = MAX_BLOCKS - len(blocks) - reserve
            if budget >= 3:
                host_tokens = {pid: t for (h, pid), t in tokens.items() if h == r.host}
                blocks.append(context(culprit_heading(r)))
                host_details = {pid: t for (h, pid), t in (details_tokens or {}).items() if h == r.host}
                part, _ = _culprit_blocks(
                    r.holding_back, budget - 1, host_tokens, kill_disabled, query_chars, details_tokens=host_details
                )
                blocks += part
    foot = []
    if alert is not None:
        foot.append(
            f"Alerts in <#{esc(alert.channel)}> after {alert.consecutive} checks over "
            f"{format_duration(alert.threshold)} (checked every {format_duration(alert.check_every)})"
            if alert.channel.startswith(("C", "G"))
            else f"Alerts in #{esc(alert.channel.lstrip('#'))} after {alert.consecutive} checks over "
            f"{format_duration(alert.threshold)}"
        )
    if primary_error:
        foot.append(f"Primary not read: {esc(primary_error)}")
    if not results:
        blocks.append(section(f"{code(env)} has no standbys configured."))
    if foot:
        blocks.append(context(*foot))
    text = f"Replication lag on {env}: " + ("; ".join(summary) if summary else "no standbys")
    return message(text, blocks[:MAX_BLOCKS])
