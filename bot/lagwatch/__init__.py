"""The scheduled replay-lag watcher and its incidents.

* :mod:`bot.lagwatch.detect`: ``measure_standby`` (one standby -> :class:`~bot.lagwatch.model.StandbyLag`)
  and ``measure_env`` (every standby of an environment at once, for ``/pgsessions <env> lag``)
* :mod:`bot.lagwatch.rules`: the incident rules, a pure state machine (measurements in, actions out)
* :mod:`bot.lagwatch.watcher`: :class:`~bot.lagwatch.watcher.LagWatcher`, the shell: APScheduler jobs
  (leader lease, primary view, one check per standby), incident records, Slack messages

This package imports nothing on load, so that importing its models never loads the watcher.
"""
