"""What a Slack handler may use of the composition root: a typed context.

Handlers, the edge helpers and the HTTP server take a :class:`Context`; :class:`bot.runtime.Runtime`
(the composition root, above the Slack edge) satisfies it structurally, so nothing in ``bot/slack/``
imports the runtime. The read-only members are the services built once at start; the three settable
ones are hooks a feature installs when it is registered.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

from apscheduler.schedulers.base import BaseScheduler
from slack_sdk import WebClient

from bot.approval.policy import Policy
from bot.approval.workflow import Workflow
from bot.config import Config
from bot.fleet.shards import Shards
from bot.postgres.pools import Databases
from bot.slack.dedupe import EventDedupe
from bot.slack.directory import Directory
from bot.slack.messages import RequestMessages
from bot.slack.settings import SlackSettings
from bot.state.store import StateStore


class Context(Protocol):
    @property
    def config(self) -> Config: ...

    @property
    def slack(self) -> SlackSettings: ...

    @property
    def dbs(self) -> Databases: ...

    @property
    def store(self) -> StateStore: ...

    @property
    def client(self) -> WebClient: ...

    @property
    def directory(self) -> Directory: ...

    @property
    def scheduler(self) -> BaseScheduler: ...

    @property
    def policy(self) -> Policy: ...

    @property
    def workflow(self) -> Workflow: ...

    @property
    def messages(self) -> RequestMessages: ...

    @property
    def ready(self) -> threading.Event: ...

    @property
    def instance_id(self) -> str: ...

    @property
    def shards(self) -> Shards: ...  # which environments this replica checks (bot/fleet/)

    # hooks the features install as they are registered (bot/wiring.py)
    home_refresh: Callable[[str, str | None], None] | None  # republish a user's Home tab
    event_dedupe: EventDedupe | None  # Events API retries seen in this process
    remind_due: Callable[[], int] | None  # remind approvers of half-expired requests now
