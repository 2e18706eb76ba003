"""The periodic jobs of the approval workflow, run by the scheduler (``install``) or called directly.

* every 10 s, :meth:`Housekeeping.requests`: store outcomes that waited in memory for the state
  store, expire pending requests past their TTL, end requests a stopped bot left 'executing' as
  interrupted, and have their messages redrawn;
* every 30 s, :meth:`Housekeeping.bulk`: keep the messages of databases closed by the bot true;
* every hour, :meth:`Housekeeping.purge_tokens`: forget button tokens older than a week, and the
  claims of served Slack requests older than ``DELIVERY_WINDOW``;
* every hour, :meth:`Housekeeping.purge_state`: retention (``state_retention``) of finished requests,
  audit entries and resolved incidents.
"""

from __future__ import annotations

import logging
import time

from apscheduler.schedulers.base import BaseScheduler

from bot.approval.workflow import Workflow
from bot.bulk.execute import bulk_housekeeping
from bot.state.store import DELIVERY_WINDOW

log = logging.getLogger(__name__)

# Button tokens older than this act on nothing ("not known to the bot"); requests keep their own copy
# of the target, so purging never touches a request. A week covers the longest lag incident's buttons.
TOKEN_RETENTION = 7 * 86400


class Housekeeping:
    def __init__(self, workflow: Workflow):
        self.workflow = workflow

    def catch_up(self) -> None:
        """The state store answers again (a catch-up hook of :class:`bot.state.health.StoreHealth`): the
        outcomes and audit entries that waited in memory are written first, before another replica's
        housekeeping may take their requests for interrupted. Never raises: what cannot be written yet
        stays in memory for :meth:`requests`."""
        try:
            self._flush()
        except Exception as exc:
            log.warning("could not write what waited in memory yet: %s", type(exc).__name__)

    def _flush(self) -> None:
        wf = self.workflow
        for rid in wf.flush_unsaved():  # outcomes that waited in memory for the state store
            fresh = wf.store.get_request(rid)
            if fresh is not None:
                wf.events.changed(fresh)

    def requests(self) -> None:
        wf = self.workflow
        self._flush()
        for req in wf.expire_due():
            wf.events.changed(req)
        for req in wf.recover_interrupted():
            wf.events.changed(req)

    def bulk(self) -> None:
        bulk_housekeeping(self.workflow.execution)

    def purge_tokens(self) -> int:
        # replayed-request claims count for DELIVERY_WINDOW only (bot.slack.replays)
        self.workflow.store.purge_deliveries(time.time() - DELIVERY_WINDOW)
        removed = self.workflow.store.purge_targets(time.time() - TOKEN_RETENTION)
        if removed:
            log.info("purged %d button tokens older than %d days", removed, TOKEN_RETENTION // 86400)
        return removed

    def purge_state(self) -> dict[str, int]:
        """Retention (``state_retention``): finished requests, audit entries, resolved incidents."""
        store, retention = self.workflow.store, self.workflow.config.state_retention
        store.backfill_outcome_columns()  # rows finished by a replica of an older release, before any purge
        removed = store.purge_finished(time.time() - retention)
        if any(removed.values()):
            log.info(
                "purged state older than %g days: %d requests (%d approvals), %d audit entries, %d incidents",
                retention / 86400, removed["requests"], removed["approvals"], removed["audit"],
                removed["incidents"],
            )
        return removed

    def install(self, scheduler: BaseScheduler) -> None:
        scheduler.add_job(self.requests, "interval", seconds=10, id="pgs-requests-housekeeping",
                          replace_existing=True)
        scheduler.add_job(self.purge_tokens, "interval", hours=1, id="pgs-purge-tokens", replace_existing=True)
        scheduler.add_job(self.purge_state, "interval", hours=1, id="pgs-purge-state", replace_existing=True)
        scheduler.add_job(self.bulk, "interval", seconds=30, id="pgs-bulk-housekeeping", replace_existing=True)
