"""The Details modal: one session whole, read at the click. Pure: models in, a Block Kit view out.

Every string from the monitored server is escaped (:func:`bot.render.common.esc`); the query text is
shown in code blocks cut to Slack's 3000 characters per text, in as many blocks as the modal allows.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bot.approval.ids import CANCEL, DETAILS_CALLBACK, DISCONNECT_CLIENT, TERMINATE, modal_kill_action_id
from bot.durations import format_duration
from bot.postgres.details import Details
from bot.postgres.locks import LockRef
from bot.postgres.wait_events import meaning
from bot.render.buttons import AUTOVACUUM_NOTE, IDLE_TX_NOTE
from bot.render.common import (
    SECTION_TEXT,
    actions,
    button,
    code,
    context,
    cut,
    divider,
    esc,
    plain,
    section,
    slack_time,
)
from bot.render.locks import WAITS_FROM_QUERY
from bot.render.pooler import details_pooler_section

MAX_MODAL_BLOCKS = 100
QUERY_BLOCKS = 4
LOCK_LINES = 25
CHUNK = SECTION_TEXT - 10  # room for the ``` fences


def where(env: str, host: str) -> str:
    return f"{code(env)}" if host == "primary" else f"{code(env)} / {code(host)} (standby)"


def _view(title: str, blocks: list[dict[str, Any]]) -> dict[str, Any]:
    if len(blocks) > MAX_MODAL_BLOCKS:
        blocks = blocks[: MAX_MODAL_BLOCKS - 1] + [context("(cut: a modal holds at most 100 blocks)")]
    return {
        "type": "modal",
        "callback_id": DETAILS_CALLBACK,
        "title": plain(title, 24),
        "close": plain("Close", 24),
        "blocks": blocks,
    }


def loading_view(pid: int, env: str, host: str) -> dict[str, Any]:
    return _view(f"Session {pid}", [section(f":hourglass_flowing_sand: Reading pid {pid} on {where(env, host)}…")])


def message_view(pid: int, text: str) -> dict[str, Any]:
    return _view(f"Session {pid}", [section(text)])


def _code_chunks(text: str, max_blocks: int = QUERY_BLOCKS) -> tuple[list[str], int]:
    """The query text as code-block sections (fences made harmless), and how many characters were cut."""
    # line by line: the query keeps its line breaks; every other control character shows as a sign
    safe = "\n".join(esc(line, in_code=True) for line in text.split("\n"))
    chunks = [safe[i : i + CHUNK] for i in range(0, len(safe), CHUNK)] or [""]
    shown = chunks[:max_blocks]
    cut_chars = sum(len(c) for c in chunks[max_blocks:])
    return [f"```{c}```" for c in shown], cut_chars


def when(ts: datetime | None, secs: float | None) -> str:
    if ts is None:
        return "–"
    return f"{slack_time(ts)} ({format_duration(secs)} ago)" if secs is not None else slack_time(ts)


def lock_line(ref: LockRef) -> str:
    mark = "held" if ref.granted else "*waiting*"
    waited = f" for {format_duration(ref.wait_secs)}" if not ref.granted and ref.wait_secs is not None else ""
    return f"• {mark}{waited}: {code(ref.mode)} on {ref.obj.describe(code)}"


def _lines_section(title: str, lines: list[str], total: int | None = None) -> dict[str, Any]:
    total = len(lines) if total is None else total
    body = f"*{title}*"
    used = len(body)
    shown = 0
    for line in lines:
        if used + len(line) + 1 > SECTION_TEXT - 80:
            break
        body += "\n" + line
        used += len(line) + 1
        shown += 1
    if shown < total:
        body += f"\n_… and {total - shown} more_"
    return section(body)


def pid_word(d: Details, pid: int) -> str:
    s = d.graph.sessions.get(pid) if d.graph else None
    if s is None:
        return f"pid {pid}" + (" (a prepared transaction)" if pid == 0 else "")
    app = f" {code(s.application)}" if s.application else ""
    return f"pid {pid}{app} ({esc(s.state or '?')})"


def details_view(d: Details, kill_token: str | None, kill_disabled: str | None = None) -> dict[str, Any]:
    """The modal for a session read at the click (or what happened to it)."""
    if d.status == "ended":
        return message_view(d.pid, f":white_check_mark: pid {d.pid} on {where(d.env, d.host)} has ended: nothing to show.")
    if d.status == "reused":
        return message_view(
            d.pid,
            f":warning: The session you clicked has ended: pid {d.pid} on {where(d.env, d.host)} now belongs to "
            f"another backend (started {slack_time(d.other_start)}). It is not shown here; list the sessions again.",
        )
    s = d.session
    assert s is not None
    blocks: list[dict[str, Any]] = []
    state = s.state or "?"
    aborted = " — the transaction is *aborted*: it can only roll back" if "(aborted)" in state else ""
    blocks.append(
        section(
            f"*pid {d.pid}* on {where(d.env, d.host)} · {esc(s.backend_type or '?')}\n"
            f"state {code(state)}{aborted}"
        )
    )
    blocks.append(context(f"Read {slack_time(d.read_at)}"))
    # query
    chunks, lost = _code_chunks(s.query)
    qid = s.query_id
    blocks.append(section("*Query*" + (f" · query_id `{qid}`" if qid is not None else "")))
    blocks += [section(c) for c in chunks]
    if lost:
        blocks.append(context(f"{lost} more characters not shown (Slack's limit)."))
    # times
    times = [
        f"backend start {when(s.backend_start, s.backend_secs)}",
        f"transaction start {when(s.xact_start, s.xact_secs)}",
        f"query start {when(s.query_start, s.query_secs)}",
        f"state change {when(s.state_change, s.state_secs)}",
    ]
    blocks.append(section("*Times*\n" + "\n".join(times)))
    # wait
    if s.wait_event_type:
        ev = f"{esc(s.wait_event_type)}/{esc(s.wait_event or '?')}"
        m = meaning(s.wait_event_type, s.wait_event)
        blocks.append(section(f"*Waits on* `{ev}`" + (f": {m}" if m else "")))
    # client
    client = [
        f"address {code(s.client_addr) if s.client_addr else 'local socket'}",
        f"host {code(s.client_hostname) if s.client_hostname else '–'}",
        f"port {s.client_port if s.client_port is not None else '–'}",
        f"app {code(s.application) if s.application else '–'}",
        f"user {code(s.user) if s.user else '–'}",
        f"db {code(s.database) if s.database else '–'}",
    ]
    blocks.append(section("*Client*\n" + " · ".join(client)))
    pooled = details_pooler_section(s, d.poolers)
    if pooled:
        blocks.append(section(cut(pooled, SECTION_TEXT)))
    leader, workers = d.leader_pid, list(d.worker_pids)
    text = ""
    if leader is not None and leader != d.pid:
        others = [p for p in workers if p != d.pid]
        text = f"*Parallel query* worker of leader pid {leader}" + (
            f"; other workers: {', '.join(f'pid {p}' for p in others)}" if others else ""
        )
    elif workers:
        text = "*Parallel query* leader; workers: " + ", ".join(f"pid {p}" for p in workers)
    if text:
        blocks.append(section(cut(text, SECTION_TEXT)))
    # xid / xmin
    xs = []
    if s.backend_xid:
        xs.append(f"backend_xid {code(s.backend_xid)} ({s.xid_age} transactions old)")
    if s.backend_xmin:
        xs.append(
            f"backend_xmin {code(s.backend_xmin)} ({s.xmin_age} transactions old): vacuum cannot remove rows "
            "deleted after it"
        )
    blocks.append(section("*Transaction ids*\n" + ("\n".join(xs) if xs else "no xid and no snapshot held")))
    # locks
    waiting = [lock_line(x) for x in d.locks if not x.granted]
    held = [lock_line(x) for x in d.locks if x.granted]
    if waiting and d.graph is not None and d.graph.waits_from_query:
        waiting.append(f"_{WAITS_FROM_QUERY}_")
    if d.locks_total:
        blocks.append(
            _lines_section(
                f"Locks ({d.locks_total}" + (f", first {len(d.locks)} shown" if d.locks_total > len(d.locks) else "") + ")",
                (waiting + held)[: LOCK_LINES * 2],
                d.locks_total,
            )
        )
    else:
        blocks.append(section("*Locks*\nnone"))
    # blockers and waiters
    if d.blocker_levels:
        lines = []
        for i, level in enumerate(d.blocker_levels[:8]):
            label = "blocked by" if i == 0 else "which waits for"
            lines.append(f"{'  ' * i}↳ {label} " + ", ".join(pid_word(d, p) for p in level[:10])
                         + (f" and {len(level) - 10} more" if len(level) > 10 else ""))
        if len(d.blocker_levels) > 8:
            lines.append(f"… {len(d.blocker_levels) - 8} more levels")
        roots = d.blocker_levels[-1]
        lines.append("Root: " + ", ".join(f"pid {p}" for p in roots[:10]))
        blocks.append(_lines_section("Blocked by", lines))
    if d.waiting_total:
        lw = f", longest wait {format_duration(d.longest_wait)}" if d.longest_wait is not None else ""
        blocks.append(
            section(f"*Blocks others*: {d.waiting_direct} waiting directly, {d.waiting_total} in total{lw}")
        )
    # signalling
    blocks.append(divider())
    reason = kill_disabled or d.cannot_signal
    if reason:
        blocks.append(context(f":no_entry_sign: The bot cannot cancel or terminate pid {d.pid}: {esc(reason)}"))
    elif kill_token and s.is_autovacuum:
        blocks.append(actions(f"dkill:{kill_token}",
                              button(f"Cancel {d.pid}", modal_kill_action_id(CANCEL, kill_token), kill_token)))
        blocks.append(context(AUTOVACUUM_NOTE + " Cancel asks for approval, as in the listing."))
    elif kill_token:
        elements = []
        if not s.is_idle_in_transaction:
            elements.append(button(f"Cancel {d.pid}", modal_kill_action_id(CANCEL, kill_token), kill_token))
        elements.append(
            button(f"Terminate {d.pid}", modal_kill_action_id(TERMINATE, kill_token), kill_token, style="danger")
        )
        linked = s.via.client if s.via is not None else None
        if linked is not None and linked.id is not None and s.via is not None and not s.via.kill_client_refusal:
            elements.append(button(f"Disconnect client {linked.id}",
                                   modal_kill_action_id(DISCONNECT_CLIENT, kill_token), kill_token))
        blocks.append(actions(f"dkill:{kill_token}", *elements))
        note = "Cancel and Terminate ask for approval, as in the listing."
        blocks.append(context(IDLE_TX_NOTE + " " + note if s.is_idle_in_transaction else note))
    return _view(f"Session {d.pid}", blocks)
