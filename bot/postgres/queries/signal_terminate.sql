-- Terminate one backend, re-checked in the same statement (same pid AND backend_start, client backend,
-- not the bot). The timeout form waits: true only once the backend is gone.
SELECT a.pid, pg_terminate_backend(a.pid, %(timeout_ms)s) AS signalled
  FROM pg_stat_activity a
 WHERE a.pid = %(pid)s
   AND a.backend_start = %(backend_start)s
   AND a.backend_type = 'client backend'
   AND a.pid <> pg_backend_pid()
   AND NOT (a.usename = current_user AND a.application_name LIKE 'pgsessions%%')
