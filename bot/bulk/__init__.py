"""Bulk clean-ups through the approval workflow.

* ``/pgsessions <env> clear-db DBNAME``: who is connected to a database, then *Terminate all* or *Block
  new connections and terminate all* (``ALTER DATABASE … WITH ALLOW_CONNECTIONS false`` first), and an
  approval-gated *Allow connections again*.
* ``/pgsessions <env> idle|idle-tx --app NAME [--older 10m] [--user NAME]``: *Terminate these N*.

An approval covers exactly the snapshot that was shown: every session by ``(pid, backend_start)``,
re-checked in the statement that signals it (:mod:`bot.postgres.bulk`). :mod:`bot.bulk.targets`
decides what may be offered and stores the snapshots; :mod:`bot.bulk.execute` registers the executors
the workflow runs after approval.
"""
