"""Rendering a session listing to a Block Kit message."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bot.durations import format_duration
from bot.postgres.models import Category, Listing, Session
from bot.render.buttons import session_buttons
from bot.render.common import MAX_BLOCKS, code, context, esc, fold_query, header, message, section, slack_time
from bot.render.pooler import kill_client_line, pooler_notes_text, via_line

EMOJI = {
    Category.BLOCKING: ":no_entry:",
    Category.IDLE_TX: ":hourglass_flowing_sand:",
    Category.LONG_RUNNING: ":turtle:",
    Category.BLOCKED: ":lock:",
    Category.IDLE: ":zzz:",
}


def where(listing: Listing) -> str:
    return listing.env if listing.host == "primary" else f"{listing.env} / {listing.host} (standby)"


def autovacuum_words(s: Session) -> str:
    """What an autovacuum worker is, in words (its query, e.g. ``autovacuum: VACUUM public.orders``, is
    drawn as the query)."""
    words = "*autovacuum worker* (not a client session)"
    if s.is_wraparound_run:
        words += " · *to prevent wraparound*: it must finish"
    return words


def session_text(s: Session, query_chars: int = 300) -> str:
    what, secs = s.duration
    tags = " ".join(f"`{c.value}`" for c in s.categories)
    lines = [f"{EMOJI[s.category]} *pid {s.pid}* {tags} · {what} *{format_duration(secs)}*"]
    if s.is_idle_in_transaction and s.xact_secs is not None:
        lines[0] += f" (transaction open {format_duration(s.xact_secs)})"
    if s.is_autovacuum:
        lines.append(autovacuum_words(s) + f" · db {code(s.database or '?')}")
    else:
        who = [
            f"user {code(s.user or '?')}",
            f"db {code(s.database or '?')}",
            f"app {code(s.application) if s.application else '–'}",
            f"client {code(s.client_addr) if s.client_addr else 'local socket'}",
        ]
        lines.append(" · ".join(who))
    pooled = via_line(s)
    if pooled:
        lines.append(pooled)
        why = kill_client_line(s.via)
        if why:
            lines.append(why)
    state = [f"state {esc(s.state or '?')}"]
    if s.wait_event_type:
        state.append(f"waits on {esc(s.wait_event_type)}/{esc(s.wait_event or '?')}")
    if s.blocked_by:
        state.append("*blocked by* " + ", ".join(f"pid {p}" for p in s.blocked_by))
    if s.blocking_count:
        blocks = f"*blocks {s.blocking_count} session{'s' if s.blocking_count != 1 else ''}*"
        blocks += " directly" + (f", {s.blocking_total} in total" if s.blocking_total is not None else "")
        if s.longest_wait_secs is not None:
            blocks += f", longest wait {format_duration(s.longest_wait_secs)}"
        state.append(blocks)
    lines.append(" · ".join(state))
    if s.query:
        lines.append(f"{code(fold_query(s.query, query_chars))}")
    return "\n".join(lines)


def summary(listing: Listing) -> str:
    counts = listing.counts()
    parts = [f"{EMOJI[c]} {n} {c.label}" for c, n in counts.items() if n]
    found = " · ".join(parts) if parts else ":white_check_mark: No session needs attention right now."
    if listing.ignored:
        found += (f" · :see_no_evil: {listing.ignored} ignored "
                  f"({'matches' if listing.ignored == 1 else 'match'} the environment's `ignore` rules)")
    srv = listing.server
    conns = f"{srv.client_connections} of {srv.max_connections} connections in use"
    read = f" · read in {listing.read_ms:.0f} ms" if listing.read_ms is not None else ""
    text = f"{found}\n{conns} · PostgreSQL {esc(srv.server_version.split()[0])}{read}"
    pooled = pooler_notes_text(listing.poolers)
    if pooled:
        text += "\n" + pooled
    if listing.out_of_connections:
        who = f"`{esc(listing.env)}`" if listing.host == "primary" else f"`{esc(listing.env)}` standby `{esc(listing.host)}`"
        text = (
            f":rotating_light: {who} is out of connections: {srv.client_connections} of {srv.max_connections} in use "
            "(read through the bot's reserved connection)\n" + text
        )
    return text


def thresholds_line(listing: Listing) -> str:
    t = listing.thresholds
    parts = [
        f"long-running ≥ {format_duration(t.get('long_running'))}",
        f"idle in transaction ≥ {format_duration(t.get('idle_in_transaction'))}",
        f"idle ≥ {format_duration(t.get('idle'))}",
    ]
    f = listing.filters.describe()
    read = f" · read {slack_time(listing.read_at)}" if listing.read_at else ""
    return ("filters: " + esc(f) + " · " if f else "") + "thresholds: " + ", ".join(parts) + read


def render_listing(
    listing: Listing,
    *,
    max_sessions: int = 20,
    query_chars: int = 300,
    tokens: Mapping[int, str] | None = None,
    kill_disabled: str | None = None,
    extra_blocks: list[dict[str, Any]] | None = None,
    details_tokens: Mapping[int, str] | None = None,
) -> dict[str, Any]:
    """The whole message. ``tokens`` maps pid to the button token issued for it (no buttons without)."""
    tokens = tokens or {}
    extra_blocks = extra_blocks or []
    blocks: list[dict[str, Any]] = [
        header(f"Sessions on {where(listing)}"),
        section(summary(listing)),
        context(thresholds_line(listing)),
    ]
    total = len(listing.sessions)
    # room: header, summary, thresholds, the "more" note and the extra blocks; each session up to 3
    budget = MAX_BLOCKS - len(blocks) - 1 - len(extra_blocks)
    shown = 0
    for s in listing.sessions[:max_sessions]:
        session_blocks = [section(session_text(s, query_chars))]
        session_blocks += session_buttons(s, tokens.get(s.pid), kill_disabled, (details_tokens or {}).get(s.pid))
        if len(session_blocks) > budget:
            break
        blocks += session_blocks
        budget -= len(session_blocks)
        shown += 1
    if shown < total:  # (an empty listing says so once, in the summary)
        blocks.append(
            context(
                f"Showing the worst {shown} of {total} sessions. {total - shown} more not shown: narrow the list "
                "with `active`, `idle-tx`, `blocked`, `--min 10m`, `--app NAME`, `--user NAME` or `--db NAME`."
            )
        )
    blocks += extra_blocks
    counts = listing.counts()
    text = f"Sessions on {where(listing)}: {total} need attention (" + ", ".join(
        f"{n} {c.label}" for c, n in counts.items() if n
    ) + ")" if total else f"Sessions on {where(listing)}: nothing needs attention"
    return message(text, blocks)


def render_error(text: str) -> dict[str, Any]:
    return message(text, [section(f":warning: {text}")])
