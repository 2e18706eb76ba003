-- What a pid is now (to explain why a signal was not sent).
SELECT a.pid, a.backend_start, a.backend_type, a.state, a.query_start, a.usename, a.application_name
  FROM pg_stat_activity a
 WHERE a.pid = %(pid)s
