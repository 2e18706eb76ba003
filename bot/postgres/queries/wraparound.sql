-- Transaction ID wraparound (watch.wraparound): ONE statement, one row.
--
--   databases  every database whose age(datfrozenxid) or mxid_age(datminmxid) reaches the threshold,
--              oldest first (template0 too: autovacuum freezes it, nobody else can connect to it)
--   oldest     the transaction IDs of the worst database (the largest age, for the quiet case too)
-- Only while some database is over the threshold, what holds the horizon back (what VACUUM cannot
-- freeze past): the sessions with the oldest backend_xmin / backend_xid (never the bot's own
-- connections), prepared transactions, replication slots holding xmin or catalog_xmin, and standbys'
-- hot_standby_feedback xmin. A quiet check reads pg_database only.
-- The session columns are watch_host.sql's (bot.watch.model.session_from_row reads both).
-- Parameters: threshold (bigint), query_chars (int), holders (int: sessions sent at most).
WITH me AS (
    SELECT coalesce((SELECT rolsuper FROM pg_roles WHERE rolname = current_user), false) AS is_super,
           pg_has_role(current_user, 'pg_signal_backend', 'USAGE') AS can_signal
),
dbs AS (
    SELECT datname, age(datfrozenxid)::bigint AS xid_age, mxid_age(datminmxid)::bigint AS mxid_age
      FROM pg_database
),
over AS (
    SELECT * FROM dbs
     WHERE xid_age >= %(threshold)s::bigint OR mxid_age >= %(threshold)s::bigint
),
sessions AS (
    SELECT a.pid, a.backend_start, a.backend_type, a.usename, a.datname, a.application_name,
           host(a.client_addr) AS client_addr, a.state, a.wait_event_type, a.wait_event,
           left(a.query, %(query_chars)s) AS query, a.state_change, a.query_start, a.xact_start,
           extract(epoch FROM now() - a.query_start)::float8  AS query_secs,
           extract(epoch FROM now() - a.xact_start)::float8   AS xact_secs,
           extract(epoch FROM now() - a.state_change)::float8 AS state_secs,
           a.backend_xmin::text AS backend_xmin, age(a.backend_xmin) AS xmin_age, age(a.backend_xid) AS xid_age,
           coalesce(r.rolsuper, false) AS is_superuser,
           pg_has_role(current_user, a.usesysid, 'USAGE') AS bot_has_privs
      FROM pg_stat_activity a
      LEFT JOIN pg_roles r ON r.oid = a.usesysid
     WHERE EXISTS (SELECT 1 FROM over)
       AND (a.backend_xmin IS NOT NULL OR a.backend_xid IS NOT NULL)
       AND a.pid <> pg_backend_pid()
       AND NOT (a.usename = current_user AND a.application_name LIKE 'pgsessions%%')
     ORDER BY greatest(age(a.backend_xmin), age(a.backend_xid)) DESC NULLS LAST
     LIMIT %(holders)s
)
SELECT pg_is_in_recovery()                                        AS in_recovery,
       me.is_super                                                AS bot_is_super,
       me.can_signal                                              AS bot_can_signal,
       (SELECT max(greatest(xid_age, mxid_age)) FROM dbs)         AS oldest,
       coalesce((SELECT json_agg(o ORDER BY greatest(o.xid_age, o.mxid_age) DESC, o.datname)
                   FROM over o), '[]'::json)                      AS databases,
       coalesce((SELECT json_agg(s) FROM sessions s), '[]'::json) AS sessions,
       coalesce((SELECT json_agg(p) FROM (
           SELECT gid, owner, database, transaction::text AS xid, age(transaction) AS xid_age,
                  extract(epoch FROM now() - prepared)::float8 AS secs
             FROM pg_prepared_xacts
            WHERE EXISTS (SELECT 1 FROM over)) p), '[]'::json)      AS prepared,
       coalesce((SELECT json_agg(s) FROM (
           SELECT slot_name, slot_type, active, active_pid, database,
                  xmin::text AS xmin, catalog_xmin::text AS catalog_xmin,
                  greatest(age(xmin), age(catalog_xmin)) AS xid_age,
                  pg_wal_lsn_diff(
                      CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() ELSE pg_current_wal_lsn() END,
                      restart_lsn)::float8 AS retained_bytes
             FROM pg_replication_slots
            WHERE (xmin IS NOT NULL OR catalog_xmin IS NOT NULL)
              AND EXISTS (SELECT 1 FROM over)) s), '[]'::json)     AS slots,
       coalesce((SELECT json_agg(f) FROM (
           SELECT pid, application_name, host(client_addr) AS client_addr, backend_xmin::text AS xmin,
                  age(backend_xmin) AS xid_age
             FROM pg_stat_replication
            WHERE backend_xmin IS NOT NULL
              AND EXISTS (SELECT 1 FROM over)) f), '[]'::json)     AS feedback
  FROM me
