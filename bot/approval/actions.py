"""The table of actions: every kind of request the bot can act on, declared in one place.

Each :class:`ActionKind` says what its buttons act on (the target type), what it is called (labels
in messages, the request modal's title) and what it does once approved (its executor). How its
request is drawn (the approval message and the modal) is the Slack side's: :data:`bot.render.actions.DRAWINGS`,
keyed by the same names. The action ids and callback ids are in :mod:`bot.approval.ids`; who may be
offered, request and approve is :mod:`bot.approval.policy`.

A new kind of action is one more entry in :data:`ACTIONS` (its executor) and in ``DRAWINGS``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from bot.approval import ids
from bot.approval.models import Outcome, Request, SessionTarget, TargetKind
from bot.approval.pooler_actions import disconnect_client, disconnect_refusal
from bot.approval.ports import Execution
from bot.approval.targets import signal_session
from bot.bulk.execute import run_allow_connections, run_clear_db, run_terminate_bulk

# executor(execution, request) -> outcome: acts on an approved request (never raises on purpose)
Executor = Callable[[Execution, Request], Outcome]


@dataclass(frozen=True)
class ActionKind:
    name: str  # the action id's middle part and Request.action
    target_kind: TargetKind
    button_prefix: str  # pgs_kill (a session's buttons) or pgs_bulk
    label: str  # "Terminate" in "Terminate request: pid 4211 on prod"
    verb: str  # "terminate" in "<@U1> asks to *terminate* pid 4211"
    title: str  # the modal's title (at most 24 characters)
    executor: Executor
    # Cancel does nothing to a session idle in transaction: refused, and the button is not drawn
    refuses_idle_in_transaction: bool = False
    # why a session target cannot have this action (mrkdwn), checked when a button is clicked
    session_refusal: Callable[[SessionTarget], str | None] | None = None


ACTIONS: Mapping[str, ActionKind] = {
    a.name: a
    for a in (
        ActionKind(
            ids.CANCEL, "session", ids.KILL_PREFIX, "Cancel", "cancel the query of", "Cancel session",
            signal_session, refuses_idle_in_transaction=True,
        ),
        ActionKind(
            ids.TERMINATE, "session", ids.KILL_PREFIX, "Terminate", "terminate", "Terminate session",
            signal_session,
        ),
        ActionKind(
            ids.DISCONNECT_CLIENT, "session", ids.KILL_PREFIX, "Disconnect client",
            "disconnect the PgBouncer client linked to", "Disconnect client", disconnect_client,
            session_refusal=disconnect_refusal,
        ),
        ActionKind(
            ids.TERMINATE_BULK, "bulk", ids.BULK_PREFIX, "Terminate sessions", "terminate these sessions",
            "Terminate sessions", run_terminate_bulk,
        ),
        ActionKind(
            ids.CLEAR_DB, "database", ids.BULK_PREFIX, "Clear database", "terminate every session of",
            "Terminate all", run_clear_db,
        ),
        ActionKind(
            ids.CLEAR_DB_BLOCK, "database", ids.BULK_PREFIX, "Block + clear db",
            "block new connections to and terminate every session of", "Block + terminate all",
            run_clear_db,
        ),
        ActionKind(
            ids.ALLOW_CONNECTIONS, "database", ids.BULK_PREFIX, "Allow connections", "allow new connections to",
            "Allow connections", run_allow_connections,
        ),
    )
}


def kinds_with_prefix(prefix: str) -> tuple[str, ...]:
    """The action names a button prefix serves (for parsing its action ids)."""
    return tuple(a.name for a in ACTIONS.values() if a.button_prefix == prefix)
