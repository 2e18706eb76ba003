-- The current state of one exact backend (pid + backend_start), after a cancel.
SELECT a.state, a.query_start
  FROM pg_stat_activity a
 WHERE a.pid = %(pid)s AND a.backend_start = %(backend_start)s
