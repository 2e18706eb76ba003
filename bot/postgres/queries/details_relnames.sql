-- Names of relations, read in the database they live in (the Details view of a session whose locks are
-- on relations of a database other than the bot's). Parameters: oids (oid[]).
SELECT c.oid::bigint AS oid, quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS name
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.oid = ANY (%(oids)s::oid[])
