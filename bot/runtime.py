"""The composition root: every long-lived part of the bot, built in one place as typed attributes.

Config, database pools, state store, Slack client, scheduler; the access policy, the approval workflow
(with its ports: the approvers lookup and the request-changed sink, both Slack), its housekeeping and
the lag watcher. Slack handlers receive it as a :class:`bot.slack.context.Context` (the services they
use, typed) and call the domain through its parts; nothing else holds global state. Which Slack handlers and jobs exist is :mod:`bot.wiring`.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from apscheduler.executors.pool import ThreadPoolExecutor as APSThreadPool
from apscheduler.schedulers.background import BackgroundScheduler

from bot.alerts import AlertShell
from bot.approval.housekeeping import Housekeeping
from bot.approval.policy import Policy
from bot.approval.workflow import Workflow
from bot.config import Config
from bot.fleet.shards import Shards
from bot.lagwatch.watcher import LagWatcher
from bot.postgres.pools import Databases
from bot.render import lag as render_lag
from bot.render import watch as render_watch
from bot.slack.dedupe import EventDedupe
from bot.slack.directory import Directory
from bot.slack.messages import RequestMessages
from bot.slack.outbox import outbox_for
from bot.slack.settings import SlackSettings
from bot.slack.web import make_web_client
from bot.state.health import StoreHealth
from bot.state.store import StateStore
from bot.watch.watcher import Watcher

__all__ = ["Runtime", "SlackSettings"]

log = logging.getLogger(__name__)

MAX_CHECK_THREADS = 256  # the scheduler's threads at most (a thread per host below that)


@dataclass
class Runtime:
    config: Config
    slack: SlackSettings
    dbs: Databases = field(init=False)
    store: StateStore = field(init=False)
    scheduler: BackgroundScheduler = field(init=False)
    ready: threading.Event = field(default_factory=threading.Event)
    instance_id: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{id(object())}")

    def __post_init__(self) -> None:
        self.dbs = Databases(self.config)
        # one connection per monitored host, open from start-up, for when a server has no slot left
        self.dbs.keep_reserved()
        self.store = StateStore(self.config.state)
        # whether the store answers (bot.state.health): probed by a job (bot.wiring), said by /healthz
        self.health = StoreHealth.of(self.store)
        self.client = make_web_client(self.slack.bot_token, self.slack.api_url)
        self.directory = Directory(self.client, team_id=self.config.slack.team_id)
        n_hosts = sum(len(e.hosts()) for e in self.config.environments.values())
        self.scheduler = BackgroundScheduler(
            # a thread per host up to 256: a check holds one for a bounded time (a hung host's at most its
            # timeouts); 2000 threads for a fleet of 2000 hosts spent the cores switching between them and
            # the cycle never ended (bench/fleet1000.py, issue 26)
            executors={"default": APSThreadPool(max_workers=max(8, min(n_hosts + 4, MAX_CHECK_THREADS)))},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 30},
            timezone="UTC",
        )
        self.policy = Policy(self.config, self.directory, own_state=self.store.own_connection)
        self.policy.own()  # read once now: the state store answers at start (it was just migrated)
        self.messages = RequestMessages(self.client, self.store, self.config)
        self.workflow = Workflow(self.config, self.store, self.dbs, self.policy, self.messages)
        self.messages.count_approvals = self.policy.counted_approvals
        self.housekeeping = Housekeeping(self.workflow)
        # the first thing written when the store answers again: outcomes of signals sent meanwhile
        self.health.on_catch_up("the outcomes kept in memory", self.housekeeping.catch_up)
        # every alert runs under one shell: one leader lease, one Slack outbox deliverer
        # which environments this replica checks: with a PostgreSQL state store they are sharded across the
        # live replicas by lease (bot/fleet/); with SQLite this one replica checks them all
        self.shards = Shards.for_config(self.config, self.store)
        self.alerts = AlertShell(self.config, self.store, outbox_for(self.store, lambda: self.client), self.instance_id,
                                 self.shards)
        # the session watch (bot/watch), when an environment has `watch` or `lag_alert` (host alerts)
        watch = Watcher(self.config, self.store, self.dbs, self.scheduler, self.alerts, self.policy, render_watch)
        self.watch: Watcher | None = watch if watch.envs else None
        # the lag watcher, None when no environment has a lag_alert with standbys; each of its checks of a
        # standby hands the WAL receiver's state to the session watch's WAL-receiver alert
        lagwatch = LagWatcher(self.config, self.store, self.dbs, self.client, self.scheduler, self.policy,
                              self.alerts, render_lag, receiver=self.watch.on_standby_receiver if self.watch else None)
        self.lagwatch: LagWatcher | None = lagwatch if lagwatch.envs else None
        # set by features as they are registered (bot/wiring.py)
        self.home_refresh: Callable[[str, str | None], None] | None = None  # republish a user's Home tab
        self.event_dedupe: EventDedupe | None = None  # Events API retries seen in this process
        self.remind_due: Callable[[], int] | None = None  # remind approvers of half-expired requests now

    def start_background(self) -> None:
        if not self.scheduler.running:
            self.scheduler.start()

    def close(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        self.dbs.close()
        self.store.close()
