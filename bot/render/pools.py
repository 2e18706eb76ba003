"""``/pgsessions <env> pool`` drawn (issue 25): the pools worst first, the sessions holding waiting pools."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bot.durations import format_duration
from bot.postgres.pooler_view import PoolRow, PoolView
from bot.render.buttons import session_buttons
from bot.render.common import MAX_BLOCKS, code, context, esc, header, message, section
from bot.render.listing import session_text
from bot.render.pooler import mode_word

# --- /pgsessions <env> pool ---------------------------------------------------------------------------

MAX_POOLS = 15
MAX_HOLDERS = 5  # per waiting pool


def pool_text(row: PoolRow) -> str:
    p = row.stat
    size = f" · pool size {p.pool_size}" if p.pool_size is not None else ""
    icon = ":rotating_light:" if p.cl_waiting else ":large_green_circle:"
    waiting = (f"*{p.cl_waiting} waiting*, longest wait *{format_duration(p.maxwait_secs)}*" if p.cl_waiting
               else "0 waiting")
    return (
        f"{icon} pool {code(p.name)} · pooler {code(row.pooler)} · {mode_word(p.pool_mode)}{size}\n"
        f"clients: {p.cl_active} active · {waiting}\n"
        f"server connections: {p.sv_active} active / {p.sv_idle} idle / {p.sv_used} used"
    )


def render_pools(
    view: PoolView,
    *,
    tokens: Mapping[int, str] | None = None,
    details_tokens: Mapping[int, str] | None = None,
    kill_disabled: str | None = None,
    query_chars: int = 300,
) -> dict[str, Any]:
    """The pools worst first; under each pool whose clients wait, the sessions holding it."""
    title = view.env if view.host == "primary" else f"{view.env} / {view.host} (standby)"
    blocks: list[dict[str, Any]] = [header(f"Pools on {title}")]
    waiting = [r for r in view.pools if r.stat.cl_waiting]
    summary = (f":rotating_light: {len(waiting)} pool{'s' if len(waiting) != 1 else ''} with clients waiting"
               if waiting else ":white_check_mark: No client waits for a server connection.")
    notes = [f":warning: pooler {code(r.name)} was not read: {esc(r.error)}" for r in view.reads if r.error]
    blocks.append(section(summary + ("\n" + "\n".join(notes) if notes else "")))
    shown = view.pools[:MAX_POOLS]
    for row in shown:
        blocks.append(section(pool_text(row)))
    if len(view.pools) > len(shown):
        blocks.append(context(f"{len(view.pools) - len(shown)} more pools not shown (none of them worse)."))
    for row in waiting:
        if not row.holders:
            continue
        if len(blocks) + 3 > MAX_BLOCKS:
            break
        blocks.append(section(f"*Holding pool {code(row.stat.name)}* (pooler {code(row.pooler)}), longest "
                              "transaction first:"))
        for s in row.holders[:MAX_HOLDERS]:
            session_blocks = [section(session_text(s, query_chars)),
                              *session_buttons(s, (tokens or {}).get(s.pid), kill_disabled,
                                               (details_tokens or {}).get(s.pid))]
            if len(blocks) + len(session_blocks) > MAX_BLOCKS - 1:
                break
            blocks += session_blocks
    text = f"Pools on {title}: " + (f"{len(waiting)} with clients waiting" if waiting else "no client waits")
    return message(text, blocks)
