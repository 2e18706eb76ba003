"""The periodic jobs of the approval workflow, run by the scheduler (``install``) or called directly.

* every 10 s, :meth:`Housekeeping.requests`: expire pending requests past their TTL, end requests a
  stopped bot left 'executing' as interrupted, and have their messages redrawn;
* every 30 s, :meth:`Housekeeping.bulk`: keep the messages of databases closed by the bot true;
* every hour, :meth:`Housekeeping.purge_tokens`: forget button tokens older than a week.
"""

from __future__ import annotations

import logging
import time

from apscheduler.schedulers.base import BaseScheduler

from bot.approval.workflow import Workflow
from bot.bulk.execute import bulk_housekeeping

log = logging.getLogger(__name__)

# Button tokens older than this act on nothing ("not known to the bot"); requests keep their own copy
# of the target, so purging never touches a request. A week covers the longest lag incident's buttons.
TOKEN_RETENTION = 7 * 86400


class Housekeeping:
    def __init__(self, workflow: Workflow):
        self.workflow = workflow

    def requests(self) -> None:
        wf = self.workflow
        for req in wf.expire_due():
            wf.events.changed(req)
        for req in wf.recover_interrupted():
            wf.events.changed(req)

    def bulk(self) -> None:
        bulk_housekeeping(self.workflow.execution)

    def purge_tokens(self) -> int:
        removed = self.workflow.store.purge_targets(time.time() - TOKEN_RETENTION)
        if removed:
            log.info("purged %d button tokens older than %d days", removed, TOKEN_RETENTION // 86400)
        return removed

    def install(self, scheduler: BaseScheduler) -> None:
        scheduler.add_job(self.requests, "interval", seconds=10, id="pgs-requests-housekeeping",
                          replace_existing=True)
        scheduler.add_job(self.purge_tokens, "interval", hours=1, id="pgs-purge-tokens", replace_existing=True)
        scheduler.add_job(self.bulk, "interval", seconds=30, id="pgs-bulk-housekeeping", replace_existing=True)
