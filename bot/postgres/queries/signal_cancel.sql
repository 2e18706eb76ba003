-- Cancel the running query of one backend, re-checked in the same statement: the same pid AND the
-- same backend_start (pids are reused), still a client backend, never the bot's own connections.
SELECT a.pid, pg_cancel_backend(a.pid) AS signalled
  FROM pg_stat_activity a
 WHERE a.pid = %(pid)s
   AND a.backend_start = %(backend_start)s
   AND a.backend_type = 'client backend'
   AND a.pid <> pg_backend_pid()
   AND NOT (a.usename = current_user AND a.application_name LIKE 'pgsessions%%')
