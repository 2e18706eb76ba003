"""The scheduled replay-lag watcher and its incidents.

* :func:`bot.lagwatch.detect.measure_standby`: one standby, measured -> :class:`~bot.lagwatch.model.StandbyLag`
* :func:`bot.lagwatch.detect.measure_env`: every standby of an environment at once (``/pgsessions <env> lag``)
* :class:`LagWatcher`: the APScheduler jobs (leader lease, primary view, one check per standby)
"""

from bot.lagwatch.detect import measure_env, measure_standby
from bot.lagwatch.model import Culprit, PrimaryView, Reason, StandbyLag, Unreachable
from bot.lagwatch.watcher import LagWatcher

__all__ = [
    "Culprit",
    "LagWatcher",
    "PrimaryView",
    "Reason",
    "StandbyLag",
    "Unreachable",
    "measure_env",
    "measure_standby",
]
