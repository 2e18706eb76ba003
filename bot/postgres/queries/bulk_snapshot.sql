-- The exact state_change (microseconds) of sessions a listing has just shown, found by pid AND
-- backend_start. A bulk approval keeps it, so that a session used again before the approval (its
-- state_change moves) is skipped instead of terminated.
-- Parameters: pids (int[]), starts (timestamptz[]).
SELECT a.pid,
       a.backend_start,
       a.state,
       a.state_change,
       extract(epoch FROM now() - a.state_change)::float8 AS state_secs
  FROM unnest(%(pids)s::int[], %(starts)s::timestamptz[]) AS s(pid, backend_start)
  JOIN pg_stat_activity a ON a.pid = s.pid AND a.backend_start = s.backend_start
