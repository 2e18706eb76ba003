-- Replay position and state of one hot standby, in one row (runs on the standby).
--
-- Lag is only real while WAL that has been received is not yet replayed: now() minus
-- pg_last_xact_replay_timestamp() also grows while the primary is simply idle. So the bytes
-- between pg_last_wal_receive_lsn() and pg_last_wal_replay_lsn() come first, and the age of the
-- last replayed transaction is only an estimate of time while those bytes are above zero.
-- The startup (recovery) process's wait event says why replay waits: Lock/relation (a standby
-- session holds a lock replay needs), IPC/RecoveryConflictSnapshot (a snapshot still needs rows
-- replay removes), BufferPin/BufferPin, Timeout/RecoveryApplyDelay (recovery_min_apply_delay),
-- IPC/RecoveryWalStream or Activity/RecoveryWalStream (waiting for WAL: the normal idle state).
-- The WAL receiver's status and silence also feed the session watch's "WAL receiver not streaming"
-- alert for environments with only lag_alert (the standby is read once per check, here).
--
-- No parameters.
SELECT pg_is_in_recovery()                                            AS in_recovery,
       now()                                                          AS measured_at,
       pg_last_wal_receive_lsn()::text                                AS receive_lsn,
       pg_last_wal_replay_lsn()::text                                 AS replay_lsn,
       CASE WHEN pg_last_wal_receive_lsn() IS NOT NULL AND pg_last_wal_replay_lsn() IS NOT NULL
            THEN greatest(pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()), 0)::bigint
       END                                                            AS lag_bytes,
       pg_last_xact_replay_timestamp()                                AS last_replay_at,
       extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8 AS replay_age,
       CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() ELSE false END AS replay_paused,
       wr.status                                                      AS receiver_status,
       extract(epoch FROM now() - wr.last_msg_receipt_time)::float8    AS receiver_silent_secs,
       wr.slot_name                                                   AS slot_name,
       -- only the application name, never the rest of primary_conninfo (host, user, password file)
       coalesce(substring(wr.conninfo FROM '(?:^|\s)application_name=([^\s]+)'),
                substring(wr.conninfo FROM '(?:^|\s)fallback_application_name=([^\s]+)'),
                nullif(current_setting('cluster_name'), ''))          AS wal_receiver_name,
       current_setting('max_standby_streaming_delay')                 AS max_standby_streaming_delay,
       current_setting('recovery_min_apply_delay')                    AS recovery_min_apply_delay,
       (SELECT setting::float8 / 1000 FROM pg_settings WHERE name = 'recovery_min_apply_delay') AS apply_delay_secs,
       st.pid                                                         AS startup_pid,
       st.wait_event_type                                             AS startup_wait_event_type,
       st.wait_event                                                  AS startup_wait_event,
       split_part(current_setting('server_version'), ' ', 1)          AS server_version
  FROM (SELECT 1) AS one
  LEFT JOIN pg_stat_wal_receiver wr ON true
  LEFT JOIN pg_stat_activity st ON st.backend_type = 'startup'
