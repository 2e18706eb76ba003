-- Client sessions on a database that are NOT in an approved snapshot (they connected after the listing,
-- so the approval does not cover them), never counting the bot's own connections.
-- Parameters: database (text), pids (int[]), starts (timestamptz[]).
SELECT count(*)::int AS n
  FROM pg_stat_activity a
 WHERE a.datname = %(database)s
   AND a.backend_type = 'client backend'
   AND a.pid <> pg_backend_pid()
   AND NOT (a.usename = current_user AND a.application_name LIKE 'pgsessions%%')
   AND NOT EXISTS (
        SELECT 1
          FROM unnest(%(pids)s::int[], %(starts)s::timestamptz[]) AS s(pid, backend_start)
         WHERE s.pid = a.pid AND s.backend_start = a.backend_start)
