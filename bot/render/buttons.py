"""Where the Cancel / Terminate buttons of a session are drawn (listings and lag alerts alike).

A button carries only an opaque token that the bot issued and stored with the listing: what a
button may act on is decided on the server, never read from the payload.
"""

from __future__ import annotations

from typing import Any

from bot.approval.ids import CANCEL, DISCONNECT_CLIENT, TERMINATE, details_action_id, kill_action_id
from bot.postgres.models import Session
from bot.render.common import actions, button, context, esc

IDLE_TX_NOTE = (
    "Cancel is not offered: for a session idle in transaction PostgreSQL reports success but the "
    "transaction stays open; only Terminate ends it."
)

AUTOVACUUM_NOTE = (
    "Cancel stops this autovacuum run (the worker is never terminated); autovacuum comes back to the table "
    "later, so run what waits for it right after."
)


def details_button(pid: int, token: str) -> dict[str, Any]:
    """Details needs no approval: it opens a modal with the session read at the click."""
    return button(f"Details {pid}", details_action_id(token), token)


def session_buttons(
    session: Session, token: str | None, disabled_reason: str | None = None, details_token: str | None = None
) -> list[dict[str, Any]]:
    """The blocks under a session: its buttons, or a line saying why it cannot be signalled.

    ``details_token`` adds the Details button (also on sessions that cannot be signalled)."""
    reason = disabled_reason or session.cannot_signal
    details = [details_button(session.pid, details_token)] if details_token else []
    if reason:
        blocks = [context(f":no_entry_sign: pid {session.pid} cannot be signalled from chat: {esc(reason)}")]
        if details:
            blocks.append(actions(f"details:{details_token}", *details))
        return blocks
    if token is None:
        return [actions(f"details:{details_token}", *details)] if details else []
    if session.is_autovacuum:  # Cancel only (its snapshot allows nothing else)
        return [actions(f"kill:{token}", button(f"Cancel {session.pid}", kill_action_id(CANCEL, token), token),
                        *details), context(AUTOVACUUM_NOTE)]
    elements = []
    if session.runs_query:  # Cancel stops a running query; on an idle session it does nothing
        elements.append(button(f"Cancel {session.pid}", kill_action_id(CANCEL, token), token))
    elements.append(button(f"Terminate {session.pid}", kill_action_id(TERMINATE, token), token, style="danger"))
    client = session.via.client if session.via is not None else None
    if client is not None and client.id is not None and session.via is not None and not session.via.kill_client_refusal:
        # PgBouncer 1.24+: the client linked to this server connection, not the connection (issue 25)
        elements.append(button(f"Disconnect client {client.id}", kill_action_id(DISCONNECT_CLIENT, token), token))
    elements += details
    blocks = [actions(f"kill:{token}", *elements)]
    if session.is_idle_in_transaction:
        blocks.append(context(IDLE_TX_NOTE))
    return blocks
