"""`/pgsessions <env> locks`: the blocking forest, root blockers first. Pure: models in, a message out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bot.durations import format_duration
from bot.postgres.locks import LockGraph, Tree
from bot.postgres.models import Session
from bot.render.buttons import details_button, session_buttons
from bot.render.common import (
    MAX_BLOCKS,
    SECTION_TEXT,
    actions,
    code,
    context,
    esc,
    fold_query,
    header,
    message,
    section,
    slack_time,
)
from bot.render.listing import autovacuum_words

MAX_ROOTS = 8
PER_ROOT = 10  # waiting sessions drawn under one root
MAX_LINES = 50  # waiting sessions drawn in all
QUERY_CHARS = 80


def where(env: str, host: str) -> str:
    return env if host == "primary" else f"{env} / {host} (standby)"


def who(s: Session | None, pid: int) -> str:
    if s is None:
        return f"*pid {pid}*" + (" (a prepared transaction)" if pid == 0 else " (no longer visible)")
    parts = [f"*pid {pid}*"]
    if s.is_autovacuum:
        return " · ".join([*parts, autovacuum_words(s), f"db {code(s.database or '?')}", esc(s.state or "?")])
    if s.application:
        parts.append(f"app {code(s.application)}")
    parts.append(f"{code(s.user or '?')}@{code(s.database or '?')}")
    parts.append(esc(s.state or "?"))
    return " · ".join(parts)


def root_text(graph: LockGraph, t: Tree, query_chars: int) -> str:
    s = graph.sessions.get(t.root)
    lines = [":no_entry: " + who(s, t.root)]
    if s is not None:
        what, secs = s.duration
        lines[0] += f" · {what} {format_duration(secs)}"
        if s.query:
            lines.append(f"{code(fold_query(s.query, query_chars))}")
    held = graph.holds_wanted.get(t.root, ())
    if held:
        lines.append(
            "holds what others want: " + "; ".join(f"{code(h.mode)} on {h.obj.describe(code)}" for h in held[:5])
            + (f" and {len(held) - 5} more" if len(held) > 5 else "")
        )
    lw = f" · longest wait *{format_duration(t.longest_wait)}*" if t.longest_wait is not None else ""
    lines.append(f"*{t.direct} waiting directly, {t.total} in total*{lw}")
    return "\n".join(lines)


def waiter_line(graph: LockGraph, depth: int, pid: int) -> str:
    s = graph.sessions.get(pid)
    w = graph.waits.get(pid)
    line = "\u2003" * (depth - 1) + "↳ " + who(s, pid)
    if w is not None and w.wants is not None:
        waited = f" {format_duration(w.wait_secs)}" if w.wait_secs is not None else ""
        line += f" · waits{waited} for {code(w.wants.mode)} on {w.wants.obj.describe(code)}"
    if s is not None and s.query:
        line += f" · {code(fold_query(s.query, QUERY_CHARS))}"
    return line


def replay_note(graph: LockGraph) -> str:
    """On a standby: the startup process waiting for a lock (pg_blocking_pids() names nobody for it)."""
    for pid, s in graph.sessions.items():
        if s.backend_type == "startup" and s.wait_event_type == "Lock":
            return (
                f"Replay (the startup process, pid {pid}) waits for a lock ({esc(s.wait_event or '?')}): "
                f"`/pgsessions {esc(graph.env)} lag` names the standby session that holds it."
            )
    return ""


def ddl_text(t: Tree) -> str:
    parts = []
    for q in t.ddl_queues:
        parts.append(
            f":construction: *DDL queue*: pid {q.pid} waits for {code(q.wants.mode)} on {q.wants.obj.describe(code)} "
            f"behind pid {t.root}, and {q.behind} session{'s' if q.behind != 1 else ''} queue behind that request "
            "(ordinary queries wait for the ALTER, which waits for the root)"
        )
    return "\n".join(parts)


# said once under the lock tree and in Details when the server has no pg_locks.waitstart (PostgreSQL 13)
WAITS_FROM_QUERY = "waits are timed from when each waiting query became active (PostgreSQL 13 has no lock wait start)"


def render_locks(
    graph: LockGraph,
    forest: Sequence[Tree],
    *,
    kill_tokens: Mapping[int, str] | None = None,
    details_tokens: Mapping[int, str] | None = None,
    kill_disabled: str | None = None,
    query_chars: int = 200,
    max_roots: int = MAX_ROOTS,
    per_root: int = PER_ROOT,
    max_lines: int = MAX_LINES,
) -> dict[str, Any]:
    kill_tokens = kill_tokens or {}
    details_tokens = details_tokens or {}
    title = f"Lock waits on {where(graph.env, graph.host)}"
    n_wait = sum(1 for w in graph.waits.values() if w.blocked_by)
    replay = replay_note(graph)
    if not forest:
        text = f"Nothing waits for a lock on {where(graph.env, graph.host)}."
        if replay:
            text = f"No session waits for a lock on {where(graph.env, graph.host)}, but replay does."
            return message(text, [section(":warning: " + esc(text) + "\n" + replay),
                                  context(f"Read {slack_time(graph.read_at)}")])
        return message(text, [section(":white_check_mark: " + esc(text)), context(f"Read {slack_time(graph.read_at)}")])
    blocks: list[dict[str, Any]] = [
        header(title),
        context(
            f"{n_wait} session{'s' if n_wait != 1 else ''} waiting, {len(forest)} root blocker"
            f"{'s' if len(forest) != 1 else ''}, worst first · read {slack_time(graph.read_at)}"
            + (f" · {WAITS_FROM_QUERY}" if graph.waits_from_query else "")
        ),
    ]
    if replay:
        blocks.append(section(":warning: " + replay))
    budget = MAX_BLOCKS - len(blocks) - 1
    lines_left = max_lines
    shown_roots = 0
    drawn: set[int] = set()  # a waiter under two roots gets one Details button (action ids must be unique)
    for t in list(forest)[:max_roots]:
        part = [section(root_text(graph, t, query_chars))]
        if t.ddl_queues:
            part.append(section(ddl_text(t)))
        s = graph.sessions.get(t.root)
        if s is not None:
            root_details = details_tokens.get(t.root) if t.root not in drawn else None
            part += session_buttons(s, kill_tokens.get(t.root), kill_disabled, root_details)
        tree_lines = t.lines()
        take = min(per_root, lines_left, len(tree_lines))
        body, shown = "", 0
        for depth, pid in tree_lines[:take]:
            line = waiter_line(graph, depth, pid)
            if len(body) + len(line) + 1 > SECTION_TEXT - 60:
                break
            body += ("\n" if body else "") + line
            shown += 1
        if shown < len(tree_lines):
            body += f"\n_… and {len(tree_lines) - shown} more waiting behind pid {t.root}_"
        if body:
            part.append(section(body))
        pids = [p for p in dict.fromkeys(pid for _, pid in tree_lines[:shown]) if p in details_tokens and p != t.root]
        buttons = [details_button(pid, details_tokens[pid]) for pid in pids if pid not in drawn]
        for i in range(0, len(buttons), 25):
            part.append(actions(None, *buttons[i : i + 25]))
        if len(part) > budget:
            break
        blocks += part
        budget -= len(part)
        lines_left -= shown
        drawn |= {t.root, *pids}
        shown_roots += 1
        if lines_left <= 0:
            break
    if shown_roots < len(forest):
        more = len(forest) - shown_roots
        blocks.append(context(f"{more} more root blocker{'s' if more != 1 else ''} not shown (smaller pile-ups)."))
    roots = ", ".join(str(t.root) for t in forest[:10])
    text = f"{title}: {n_wait} waiting behind {len(forest)} root blocker(s): pid {roots}"
    return message(text, blocks)


def shown_pids(forest: Sequence[Tree], max_roots: int = MAX_ROOTS, per_root: int = PER_ROOT, max_lines: int = MAX_LINES) -> list[int]:
    """The pids the message may draw (roots and waiters within the caps): the ones that need tokens."""
    out: list[int] = []
    left = max_lines
    for t in list(forest)[:max_roots]:
        out.append(t.root)
        take = min(per_root, left, len(t.lines()))
        out += [pid for _, pid in t.lines()[:take]]
        left -= take
        if left <= 0:
            break
    return list(dict.fromkeys(out))
