-- Names of relations by oid, schema-qualified, read in the database they live in (pg_locks gives a
-- relation as (database oid, relation oid); it can be named only there). Used by bot.postgres.relnames
-- for lag culprits and the Details view. Parameters: oids (oid[]).
SELECT c.oid::bigint AS oid, quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS name
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.oid = ANY (%(oids)s::oid[])
