"""Every Slack action id and view callback id the bot draws, and their parsing, in one place.

* ``pgs_kill:<cancel|terminate>:<token>``: a session's Cancel / Terminate button (listings, lag alerts)
* ``pgs_bulk:<terminate_bulk|clear_db|clear_db_block|allow_connections>:<token>``: bulk buttons
* ``pgs_req:<approve|deny|withdraw>:<request id>``: the decision buttons under an approval request
* ``pgs_details:<token>``: a session's Details button (opens a modal; no approval)
* ``pgs_dkill:<cancel|terminate>:<token>``: Cancel / Terminate inside the Details modal
* ``pgs_home:refresh``: the App Home tab's Refresh button
* ``pgs_kill_request``: the callback id of the request modal every action button opens
* ``pgs_details_view``: the callback id of the Details modal

A button's ``value`` repeats its token (or request id); a click whose value does not is refused. The
token is random and resolved on the server (:meth:`bot.state.store.StateStore.get_target`): nothing
a payload says about pids or environments is trusted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

# The kinds of action (the middle part of a button's action id, and ``Request.action``); what each one
# is and does is declared in bot/approval/actions.py.
CANCEL = "cancel"
TERMINATE = "terminate"
TERMINATE_BULK = "terminate_bulk"
CLEAR_DB = "clear_db"
CLEAR_DB_BLOCK = "clear_db_block"
ALLOW_CONNECTIONS = "allow_connections"
DISCONNECT_CLIENT = "disconnect_client"  # a PgBouncer client (KILL_CLIENT, 1.24+; issue 25)
SESSION_KINDS = (CANCEL, TERMINATE)
BULK_KINDS = (TERMINATE_BULK, CLEAR_DB, CLEAR_DB_BLOCK, ALLOW_CONNECTIONS)
VERDICTS = ("approve", "deny", "withdraw")

KILL_PREFIX = "pgs_kill"
BULK_PREFIX = "pgs_bulk"
DECIDE_PREFIX = "pgs_req"
DETAILS_PREFIX = "pgs_details"  # pgs_details:<token>: a session's Details button (no approval)
MODAL_KILL_PREFIX = "pgs_dkill"  # pgs_dkill:<cancel|terminate>:<token>: Cancel/Terminate inside Details
HOME_REFRESH = "pgs_home:refresh"  # the App Home tab's Refresh button
REQUEST_CALLBACK = "pgs_kill_request"
DETAILS_CALLBACK = "pgs_details_view"  # the Details modal

_TOKEN = r"[A-Za-z0-9_-]{1,64}"

# action ids that ask to act or decide (the workspace guard refuses them from another organisation)
ACTING_PREFIXES = (f"{KILL_PREFIX}:", f"{BULK_PREFIX}:", f"{DECIDE_PREFIX}:")

# every click whose action id starts with a prefix reaches its listener, which then parses it exactly
ANY_KILL = re.compile(rf"^{KILL_PREFIX}:")
ANY_BULK = re.compile(rf"^{BULK_PREFIX}:")
ANY_DECIDE = re.compile(rf"^{DECIDE_PREFIX}:")
ANY_DETAILS = re.compile(rf"^{DETAILS_PREFIX}:")
ANY_MODAL_KILL = re.compile(rf"^{MODAL_KILL_PREFIX}:")


def action_id(prefix: str, verb: str, token: str) -> str:
    return f"{prefix}:{verb}:{token}"


def kill_action_id(action: str, token: str) -> str:
    return action_id(KILL_PREFIX, action, token)


def bulk_action_id(action: str, token: str) -> str:
    return action_id(BULK_PREFIX, action, token)


def details_action_id(token: str) -> str:
    return f"{DETAILS_PREFIX}:{token}"


def modal_kill_action_id(action: str, token: str) -> str:
    return action_id(MODAL_KILL_PREFIX, action, token)


def decide_action_id(verdict: str, request_id: str) -> str:
    return action_id(DECIDE_PREFIX, verdict, request_id)


@dataclass(frozen=True)
class Click:
    verb: str
    token: str


def parse_details_click(action_id_: str, value: str | None) -> str | None:
    """The token of ``pgs_details:<token>`` whose value repeats it, else None."""
    m = re.match(rf"^{DETAILS_PREFIX}:({_TOKEN})$", action_id_ or "")
    return m.group(1) if m is not None and value == m.group(1) else None


def parse_click(prefix: str, verbs: Iterable[str], action_id_: str, value: str | None) -> Click | None:
    """``prefix:verb:token`` with a known verb and a value that repeats the token, else None."""
    pattern = re.compile(rf"^{re.escape(prefix)}:({'|'.join(map(re.escape, verbs))}):({_TOKEN})$")
    m = pattern.match(action_id_ or "")
    if m is None or value != m.group(2):
        return None
    return Click(m.group(1), m.group(2))
