-- The primary's view of its standbys (runs on the primary): one row per WAL sender.
--
-- replay_lag may read NULL even while writes flow (it is only computed from the standby's replies),
-- so NULL means "unknown", not "broken". slot_name links a row to the standby's
-- pg_stat_wal_receiver.slot_name; application_name to its primary_conninfo / cluster_name.
--
-- No parameters.
SELECT r.pid,
       r.application_name,
       host(r.client_addr)                                            AS client_addr,
       r.state,
       r.sync_state,
       s.slot_name,
       r.sent_lsn::text                                               AS sent_lsn,
       r.replay_lsn::text                                             AS replay_lsn,
       pg_current_wal_lsn()::text                                     AS current_lsn,
       pg_wal_lsn_diff(pg_current_wal_lsn(), r.replay_lsn)::bigint    AS behind_bytes,
       extract(epoch FROM r.write_lag)::float8                        AS write_lag,
       extract(epoch FROM r.flush_lag)::float8                        AS flush_lag,
       extract(epoch FROM r.replay_lag)::float8                       AS replay_lag,
       r.reply_time,
       now()                                                          AS measured_at
  FROM pg_stat_replication r
  LEFT JOIN pg_replication_slots s ON s.active_pid = r.pid
