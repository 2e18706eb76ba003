"""The App Home tab (issue 16): published with ``views.publish`` when someone opens it, on *Refresh*,
and after they approve or deny from it.

The listener acknowledges the event first and publishes afterwards (Bolt runs it in its listener pool
after the ack), so reading the servers never delays the ack. Hosts are read concurrently on a bounded
pool, each with its environment's connect and statement timeouts (as a listing); the view waits at most
the longest of those deadlines, and a host that has not answered by then is shown as unreachable
without holding up the others.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

from slack_bolt import Ack, App
from slack_sdk.errors import SlackApiError

from bot.approval.models import Request, RequestState
from bot.postgres.activity import list_sessions
from bot.postgres.lag import read_standby
from bot.postgres.models import Category, Filters
from bot.postgres.pools import DatabaseUnavailable
from bot.render.home import REFRESH_ACTION, EnvStatus, HostStatus, home_view, message_link
from bot.slack.context import Context
from bot.slack.edge import Router
from bot.state.incidents import open_incidents
from bot.state.shards import ShardStore
from bot.visibility import may_view

log = logging.getLogger(__name__)

HOME_READERS = 8  # hosts read at the same time, for all Home tabs together
_pool = ThreadPoolExecutor(max_workers=HOME_READERS, thread_name_prefix="pgs-home")


def _host_status(rt: Context, env: str, host: str) -> HostStatus:
    is_standby = host != "primary"
    try:
        listing = list_sessions(rt.dbs, env, host, Filters())
        counts: Counter[str] = Counter()
        for s in listing.sessions:
            if s.categories:  # each session once, by its most urgent reason
                counts[min((Category(c) for c in s.categories), key=lambda c: c.rank).label] += 1
        lag_bytes = replay_age = None
        if is_standby:
            with rt.dbs.connection(env, host, op="home_lag") as conn:
                row = read_standby(conn)
            lag_bytes, replay_age = row.get("lag_bytes"), row.get("replay_age")
        return HostStatus(
            host=host,
            connections=listing.server.client_connections,
            max_connections=listing.server.max_connections,
            attention=dict(counts),
            is_standby=is_standby,
            lag_bytes=lag_bytes,
            replay_age=replay_age if lag_bytes else None,
        )
    except DatabaseUnavailable as exc:
        return HostStatus(host=host, error=exc.reason, is_standby=is_standby)
    except Exception as exc:
        log.warning("home: reading %s/%s failed: %s", env, host, type(exc).__name__)
        return HostStatus(host=host, error=f"could not be read ({type(exc).__name__})", is_standby=is_standby)


def _open_incidents(rt: Context) -> dict[str, list[tuple[str, str, str | None]]]:
    out: dict[str, list[tuple[str, str, str | None]]] = {}
    for inc in open_incidents(rt.store):
        out.setdefault(inc.env, []).append((inc.host, inc.kind, message_link(inc.channel, inc.message_ts)))
    return out


def _watchers(rt: Context) -> dict[str, str] | None:
    """Several replicas (bot/fleet/): env -> the replica checking it now; None with one replica."""
    shards = getattr(rt, "shards", None)
    if shards is None or not shards.fleet:
        return None
    try:
        return ShardStore(rt.store).watchers()
    except Exception as exc:  # the state store is down: say nothing about it here
        log.warning("home: reading who watches what failed: %s", type(exc).__name__)
        return None


def environments(rt: Context, user: str) -> list[EnvStatus]:
    """The status of every environment ``user`` may see, hosts read concurrently within their deadlines."""
    visible = [e for e in rt.config.environments if may_view(rt.config, rt.directory, user, e)]
    if not visible:
        return []
    futures = {}
    deadline = 0.0
    for env in visible:
        environment = rt.config.environments[env]
        t = environment.timeouts
        # a listing's deadline (connect, then the query), and the lag read on a standby after it
        deadline = max(deadline, 2 * (t.connect + 0.5) + 2 * t.statement + 1)
        for host in environment.hosts():
            futures[(env, host)] = _pool.submit(_host_status, rt, env, host)
    done, _ = wait(futures.values(), timeout=deadline)
    open_incidents = _open_incidents(rt)
    watchers = _watchers(rt)
    watched = set(rt.shards.envs) if watchers is not None else set()
    out = []
    for env in visible:
        hosts = []
        for host in rt.config.environments[env].hosts():
            f = futures[(env, host)]
            if f in done:
                hosts.append(f.result())
            else:
                hosts.append(HostStatus(host=host, error=f"did not answer within {deadline:g}s",
                                        is_standby=host != "primary"))
        by = watchers.get(env, "") if watchers is not None and env in watched else None
        out.append(EnvStatus(env, tuple(hosts), tuple(open_incidents.get(env, ())), watched_by=by))
    return out


def waiting_for(rt: Context, user: str) -> list[Request]:
    """Pending requests ``user`` may decide: an approver of the environment, not the requester (unless
    self-approval), and not one who already approved. The buttons re-check all of it."""
    out = []
    for req in rt.store.requests_in((RequestState.PENDING,)):
        environment = rt.config.env(req.env)
        if environment is None or req.expires_at <= time.time():
            continue
        access = environment.access
        if user == req.requester and not access.self_approval:
            continue
        if not rt.directory.allowed(user, access.approvers):
            continue
        if user in rt.store.approvers_of(req.id):
            continue
        out.append(rt.policy.shown(req))
    return out


def my_requests(rt: Context, user: str, limit: int = 15) -> list[Request]:
    return [rt.policy.shown(r) for r in rt.store.requests_by(user, limit)]


def build_home(rt: Context, user: str, notice: str | None = None) -> dict[str, Any]:
    return home_view(user, waiting_for(rt, user), my_requests(rt, user), environments(rt, user), time.time(),
                     notice=notice)


def publish_home(rt: Context, user: str, notice: str | None = None) -> None:
    """Build and publish ``user``'s Home tab; ``notice``: the answer to their last click, shown on top."""
    if not user:
        return
    try:
        view = build_home(rt, user, notice)
    except Exception:
        log.exception("could not build the Home tab for %s", user)
        return
    try:
        rt.client.views_publish(user_id=user, view=view)
    except SlackApiError as exc:
        log.warning("views.publish for %s failed: %s", user, exc.response.get("error"))
    except Exception as exc:
        log.warning("views.publish for %s failed: %s", user, type(exc).__name__)


def register(app: App, rt: Context, router: Router) -> None:
    rt.home_refresh = lambda user, notice=None: publish_home(rt, user, notice)

    @app.event("app_home_opened")
    def on_home_opened(ack: Ack, event: dict[str, Any]) -> None:
        ack()
        if event.get("tab", "home") != "home":
            return
        publish_home(rt, event.get("user") or "")

    @app.action(REFRESH_ACTION)
    def on_refresh(ack: Ack, body: dict[str, Any]) -> None:
        ack()
        publish_home(rt, (body.get("user") or {}).get("id", ""))
