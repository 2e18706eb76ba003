"""The scheduled replay-lag watcher and its incidents.

* :func:`bot.lagwatch.detect.measure_standby`: one standby, measured -> :class:`~bot.lagwatch.model.StandbyLag`
* :func:`bot.lagwatch.detect.measure_env`: every standby of an environment at once (``/pgsessions <env> lag``)
* :func:`install`: the APScheduler jobs (leader lease, primary view, one check per standby)
"""

from bot.lagwatch.detect import measure_env, measure_standby
from bot.lagwatch.model import Culprit, PrimaryView, Reason, StandbyLag, Unreachable
from bot.lagwatch.watcher import LagWatcher, install

__all__ = [
    "Culprit",
    "LagWatcher",
    "PrimaryView",
    "Reason",
    "StandbyLag",
    "Unreachable",
    "install",
    "measure_env",
    "measure_standby",
]
