"""Which features the bot has, registered explicitly: the Slack handlers and the scheduled jobs.

The parts themselves (policy, workflow, request messages, housekeeping, lag watcher) are built by
:class:`bot.runtime.Runtime`; :func:`bot.slack.app.build_app` calls :func:`register_features` and
:func:`install_jobs`. Adding a feature: write ``bot/slack/<feature>_handlers.py`` with a
``register`` function and call it here.
"""

from __future__ import annotations

from slack_bolt import App

from bot.runtime import Runtime
from bot.slack import (
    bulk_handlers,
    details_handlers,
    events,
    home_handlers,
    kill_handlers,
    lag_handlers,
    listing_handlers,
    nudges,
    pool_handlers,
    replays,
    store_alert,
    watch_handlers,
)
from bot.slack.edge import Router


def register_features(app: App, rt: Runtime, router: Router) -> None:
    listing_handlers.register(rt, router)
    kill_handlers.register(app, rt, router)  # every action button, the request modal, decisions
    lag_handlers.register(rt, router)
    bulk_handlers.register(rt, router)  # clear-db, and the *Terminate these N* listing extra
    details_handlers.register(app, rt, router)  # the Details button and modal, `locks`
    events.register(app, rt, router)  # the Events API: mentions, retried events dropped
    replays.register(app, rt)  # a replayed signed slash command or click does nothing
    nudges.register(app, rt, router)  # the requester's DM, the approvers' reminder
    home_handlers.register(app, rt, router)  # the App Home tab
    watch_handlers.register(app, rt, router)  # every alert's Acknowledge button
    pool_handlers.register(rt, router)  # `/pgsessions <env> pool` (PgBouncer, issue 25)


def install_jobs(rt: Runtime) -> None:
    """Add the periodic jobs to ``rt.scheduler`` (they run once it is started)."""
    rt.housekeeping.install(rt.scheduler)
    # the state store's health (issue 23 §6): probed every 2 s; one alert while it does not answer
    rt.health.install(rt.scheduler)
    channel = store_alert.alert_channel(rt.config)
    if channel is not None:
        def leads() -> bool:
            return any(w is not None and w.is_leader() for w in (rt.lagwatch, rt.watch))
        alert = store_alert.StoreDownAlert(rt.health, lambda: rt.client, channel, leads, rt.instance_id)
        rt.health.on_probe(alert.on_probe)
    rt.shards.install(rt.scheduler)  # fleet mode: the heartbeat and the environment leases
    if rt.watch is not None:
        rt.watch.install()
    if rt.lagwatch is not None:
        rt.lagwatch.install()
