-- Which of these exact backends (pid AND backend_start) still exist: polled after a batch was signalled.
-- Parameters: pids (int[]), starts (timestamptz[]).
SELECT a.pid
  FROM unnest(%(pids)s::int[], %(starts)s::timestamptz[]) AS s(pid, backend_start)
  JOIN pg_stat_activity a ON a.pid = s.pid AND a.backend_start = s.backend_start
