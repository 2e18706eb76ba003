-- Names of relations by oid, in the database this runs in (bot.postgres.relnames connects to the
-- database a lock is in: ::regclass names a relation only there). Parameters: oids (int[]).
SELECT c.oid::bigint AS oid, c.oid::regclass::text AS name
  FROM pg_class c
 WHERE c.oid = ANY(%(oids)s::oid[])
