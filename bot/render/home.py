"""The App Home tab as Block Kit (issue 16). Pure: models in, a ``{"type": "home", ...}`` view out.

Three parts: *Waiting for you* (pending requests this person may approve, with the same Approve / Deny
action ids as the channel message, so the same handler and checks run), *Your requests* (recent, with
states) and *Environments* (per host: connections used of max, sessions needing attention by category,
standbys' replay lag, open incidents). A *Refresh* button on top. At most 100 blocks (Slack's limit for
Home): long parts are cut, and say how many were left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bot.approval.ids import HOME_REFRESH, decide_action_id
from bot.approval.models import Request
from bot.durations import format_bytes, format_duration
from bot.render.approval import action_verb, target_summary, where
from bot.render.common import actions, button, code, context, cut, divider, esc, header, section, slack_time

MAX_HOME_BLOCKS = 100
REFRESH_ACTION = HOME_REFRESH
MAX_WAITING = 20  # 2 blocks each
MAX_MINE = 15
MAX_ENVS = 25  # 1 block each (+ 1 when there are more)
STATE_WORDS = {
    "pending": ":hourglass: waiting for approval",
    "executing": ":gear: approved, acting now",
    "done": ":white_check_mark: done",
    "failed": ":x: not done",
    "denied": ":no_entry: denied",
    "withdrawn": ":leftwards_arrow_with_hook: withdrawn",
    "expired": ":alarm_clock: expired",
}


@dataclass(frozen=True)
class HostStatus:
    host: str
    error: str | None = None  # why it could not be read (already free of secrets)
    connections: int | None = None
    max_connections: int | None = None
    attention: dict[str, int] = field(default_factory=dict)  # category label -> count
    is_standby: bool = False
    lag_bytes: int | None = None
    replay_age: float | None = None


@dataclass(frozen=True)
class EnvStatus:
    env: str
    hosts: tuple[HostStatus, ...]
    incidents: tuple[tuple[str, str, str | None], ...] = ()  # (host, kind, link)
    # several replicas on a PostgreSQL state store (bot/fleet/): the one that runs this environment's checks
    # now ("" when none does); None with one replica (nothing is said)
    watched_by: str | None = None


def _dt(ts: float | None) -> datetime | None:
    return datetime.fromtimestamp(ts, UTC) if ts else None


def message_link(channel: str | None, ts: str | None) -> str | None:
    if not channel or not ts:
        return None
    return f"https://slack.com/archives/{channel}/p{ts.replace('.', '')}"


def _link(req: Request, label: str = "request message") -> str:
    link = message_link(req.channel, req.message_ts)
    return f" · <{link}|{label}>" if link else ""


def _verb(req: Request) -> str:
    return action_verb(req.action)


def _waiting_blocks(req: Request, now: float) -> list[dict[str, Any]]:
    rid = req.id
    text = (
        f"*{esc(_verb(req))}* {target_summary(req.target)} on {where(req.env, req.host)}\n"
        f"asked by <@{req.requester}> {format_duration(now - req.created_at)} ago · expires in "
        f"{format_duration(max(0.0, req.expires_at - now))}{_link(req)}\n"
        f"*Reason:* {esc(cut(req.reason or '(none given)', 500))}"
    )
    return [
        section(text),
        actions(
            f"home-req:{rid}",
            button("Approve", decide_action_id("approve", rid), rid, style="primary"),
            button("Deny", decide_action_id("deny", rid), rid, style="danger"),
        ),
    ]


def _host_line(h: HostStatus) -> str:
    name = f"*{esc(h.host)}*" + (" (standby)" if h.is_standby else "")
    if h.error:
        return f"{name}: :warning: unreachable: {esc(cut(h.error, 200))}"
    parts = []
    if h.connections is not None and h.max_connections:
        parts.append(f"{h.connections} of {h.max_connections} connections")
    need = sum(h.attention.values())
    if need:
        parts.append(f"{need} need attention (" + ", ".join(f"{n} {esc(k)}" for k, n in h.attention.items()) + ")")
    else:
        parts.append("nothing needs attention")
    if h.is_standby:
        if h.lag_bytes is None:
            parts.append("replay lag unknown")
        elif h.lag_bytes == 0:
            parts.append("replay caught up")
        else:
            age = f", last replayed {format_duration(h.replay_age)} ago" if h.replay_age is not None else ""
            parts.append(f"replay lag {format_bytes(h.lag_bytes)}{age}")
    return f"{name}: " + " · ".join(parts)


def _env_block(e: EnvStatus) -> dict[str, Any]:
    lines = [f"*`{esc(e.env)}`*"] + [f"• {_host_line(h)}" for h in e.hosts]
    if e.watched_by is not None:
        lines.append(f"• checked by replica {code(e.watched_by)}" if e.watched_by
                     else "• :warning: no replica checks it right now (handing over)")
    for host, kind, link in e.incidents:
        label = f"open {esc(kind)} incident on {esc(host)}"
        lines.append(f"• :rotating_light: <{link}|{label}>" if link else f"• :rotating_light: {label}")
    return section("\n".join(lines))


def home_view(
    user: str,
    waiting: list[Request],
    mine: list[Request],
    envs: list[EnvStatus],
    now: float,
    notice: str | None = None,
) -> dict[str, Any]:
    """``notice``: the bot's answer to this person's last click on the tab (already Slack text)."""
    blocks: list[dict[str, Any]] = [
        header("pgsessions"),
        actions("home-top", button("Refresh", REFRESH_ACTION, "refresh")),
        context(f"For <@{user}> · updated {slack_time(_dt(now))}"),
    ]
    if notice:
        blocks.append(section(cut(notice, 2900)))
    blocks += [
        divider(),
        header("Waiting for you"),
    ]
    if waiting:
        for req in waiting[:MAX_WAITING]:
            blocks += _waiting_blocks(req, now)
        if len(waiting) > MAX_WAITING:
            blocks.append(context(f"{len(waiting) - MAX_WAITING} more waiting: `/pgsessions pending` lists them all."))
    else:
        blocks.append(section("Nothing is waiting for your approval."))
    blocks += [divider(), header("Your requests")]
    if mine:
        lines = []
        for req in mine[:MAX_MINE]:
            label = STATE_WORDS.get(req.state, req.state)
            lines.append(
                f"{slack_time(_dt(req.created_at))} *{esc(_verb(req))}* {target_summary(req.target)} on "
                f"{where(req.env, req.host)}: {label}{_link(req, 'message')}"
            )
        blocks.append(section("\n".join(lines)))
    else:
        blocks.append(section("You have made no requests recently."))
    blocks += [divider(), header("Environments")]
    if envs:
        for e in envs[:MAX_ENVS]:
            blocks.append(_env_block(e))
        if len(envs) > MAX_ENVS:
            blocks.append(context(f"{len(envs) - MAX_ENVS} more environments not shown."))
    else:
        blocks.append(section("There is no environment you may see. Ask the bot's operators to add you to an "
                              "environment's access (requesters or approvers)."))
    assert len(blocks) <= MAX_HOME_BLOCKS, len(blocks)
    return {"type": "home", "blocks": blocks}
