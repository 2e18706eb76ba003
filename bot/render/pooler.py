"""Drawing what the poolers said (issue 25): the linked client under a session, pool members, pools.

Every string here that came from a pooler or a server (names, addresses, application names) goes
through :func:`bot.render.common.code` / :func:`esc`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from bot.durations import format_duration
from bot.postgres.models import Session
from bot.postgres.pooler_models import PooledVia, PoolerClient, PoolerNote, version_text
from bot.render.common import code, esc

MODE_WORDS = {"session": "session pooling", "transaction": "transaction pooling", "statement": "statement pooling"}


def client_address(c: PoolerClient) -> str:
    if not c.addr:
        return "local socket"
    return f"{c.addr}:{c.port}" if c.port is not None else c.addr


def linked_secs(s: Session, now: datetime | None = None) -> float | None:
    """How long the client has been linked to this server connection: in session pooling since it
    connected; otherwise for the transaction (a link lasts one transaction) or the statement."""
    via = s.via
    if via is None or via.client is None:
        return None
    if via.pool_mode == "session":
        if via.client.connect_time is None:
            return None
        return max(0.0, ((now or via.read_at or datetime.now(UTC)) - via.client.connect_time).total_seconds())
    if s.xact_secs is not None:
        return s.xact_secs
    return s.query_secs


def mode_word(mode: str | None) -> str:
    return MODE_WORDS.get(mode or "", f"{esc(mode)} pooling" if mode else "pool mode unknown")


def via_line(s: Session) -> str | None:
    """``:link: via pooler `pgb1` (pool `app/appdb`, transaction pooling) · client `10.1.2.3:5512` · app ... ``."""
    via = s.via
    if via is None:
        return None
    head = f":link: via pooler {code(via.pooler)} (pool {code(via.pool)}, {mode_word(via.pool_mode)})"
    c = via.client
    if c is None:
        return head + " · no client linked: idle in the pool"
    parts = [
        head,
        f"client {code(client_address(c))}",
        f"app {code(c.application) if c.application else '–'}",
        f"user {code(c.user)}",
        f"db {code(c.database)}",
    ]
    linked = linked_secs(s)
    if linked is not None:
        parts.append(f"linked {format_duration(linked)}")
    if c.id is not None:
        parts.append(f"client id {c.id}")
    return " · ".join(parts)


def kill_client_line(via: PooledVia | None) -> str | None:
    """Why Disconnect client is not offered for this session (older PgBouncer), or None."""
    if via is None or via.client is None:
        return None
    why = via.kill_client_refusal
    return f":information_source: {why}" if why else None


def pooler_notes_text(notes: Iterable[PoolerNote]) -> str | None:
    """One line per pooler: its idle pool members per pool, or why it was not read."""
    lines = []
    for n in notes:
        if n.error is not None:
            lines.append(f":warning: pooler {code(n.name)} was not read: {esc(n.error)}")
            continue
        members = ", ".join(f"{count} idle in pool {code(pool)}" for pool, count in n.idle_members)
        lines.append(f":link: pooler {code(n.name)} (PgBouncer {version_text(n.version)}): "
                     + (members if members else "no idle pool members"))
    return "\n".join(lines) if lines else None


def details_pooler_section(s: Session, notes: Iterable[PoolerNote] = ()) -> str | None:
    """The Details modal's *Pooler* part: pool, pool mode, the linked client and its wait time."""
    lines = []
    via = s.via
    if via is not None:
        lines.append(f"opened by pooler {code(via.pooler)} (PgBouncer {version_text(via.version)}) for pool "
                     f"{code(via.pool)}, {mode_word(via.pool_mode)}")
        c = via.client
        if c is None:
            lines.append("no client linked: an idle member of the pool, not an application's connection")
        else:
            client = [
                f"address {code(client_address(c))}",
                f"app {code(c.application) if c.application else '–'}",
                f"user {code(c.user)}",
                f"db {code(c.database)}",
            ]
            if c.id is not None:
                client.append(f"client id {c.id}")
            lines.append("linked client: " + " · ".join(client))
            linked = linked_secs(s)
            lines.append(f"linked {format_duration(linked) if linked is not None else '?'} · client state "
                         f"{code(c.state)} · waited for a server {format_duration(c.wait_secs)}")
            why = via.kill_client_refusal
            if why:
                lines.append(f":information_source: {why}")
            elif via.pool_mode != "session":
                lines.append("Terminate ends this server connection, and with it the transaction of the client "
                             "linked now; Disconnect client ends that client only.")
            else:
                lines.append("Disconnect client ends that client only; the server connection stays in the pool.")
    for n in notes:
        if n.error is not None:
            lines.append(f":warning: pooler {code(n.name)} was not read: {esc(n.error)}")
    return "*Pooler*\n" + "\n".join(lines) if lines else None
