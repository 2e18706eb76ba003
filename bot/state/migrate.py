"""Bring a state database to the newest schema with Alembic, configured here (no alembic.ini, no env.py).

Run by ``StateStore`` at start, in one write transaction:

- PostgreSQL: the transaction first takes an advisory lock, so replicas starting together migrate one
  after the other (the later ones find the schema at head and do nothing); DDL is transactional, so a
  failed upgrade leaves the database as it was.
- SQLite: the transaction starts with ``BEGIN IMMEDIATE``, which serialises writers the same way.

A database made by release 0.1.0 (``metadata.create_all``: the tables, no version table) is recognised
and stamped at revision 0001 before the upgrade; an empty database is created by the revisions.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from alembic.config import Config as AlembicConfig
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

log = logging.getLogger(__name__)
# Alembic says "setup plugin ..." and "Context impl ..." at INFO on every start; the store logs one line
# when the schema changes.
if logging.getLogger("alembic").level == logging.NOTSET:
    logging.getLogger("alembic").setLevel(logging.WARNING)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# Its own name, so that a state database shared with another Alembic-managed application never mixes
# their versions.
VERSION_TABLE = "pgs_alembic_version"
# The revision that describes what release 0.1.0 created without a version table.
BASELINE = "0001"
LEGACY_TABLES = ("pgs_targets", "pgs_requests", "pgs_approvals", "pgs_audit", "pgs_incidents", "pgs_leases")
# pg_advisory_xact_lock key: "pgsessions" read as a number, shared by every replica.
ADVISORY_LOCK_KEY = 0x7067736573736E73
# A migration may rewrite a table: it gets more than the state store's usual statement timeout.
MIGRATION_TIMEOUT_MS = 300_000


def _alembic_config() -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def script_directory() -> ScriptDirectory:
    return ScriptDirectory.from_config(_alembic_config())


def head() -> str:
    rev = script_directory().get_current_head()
    assert rev is not None
    return rev


def current_revision(conn: Connection) -> str | None:
    return MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()


def upgrade(conn: Connection, target: str = "head") -> tuple[str | None, str | None]:
    """Migrate the database behind ``conn`` (in a transaction the caller commits) to ``target``.

    Returns (revision before, revision after); before is ``"legacy"`` for a stamped 0.1.0 database.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(text(f"SET LOCAL statement_timeout = {MIGRATION_TIMEOUT_MS}"))
        conn.execute(text(f"SET LOCAL lock_timeout = {MIGRATION_TIMEOUT_MS}"))
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": ADVISORY_LOCK_KEY})

    cfg = _alembic_config()
    script = ScriptDirectory.from_config(cfg)

    def do_upgrade(rev: Any, context: Any) -> Any:
        return script._upgrade_revs(target, rev)

    with EnvironmentContext(cfg, script, fn=do_upgrade, destination_rev=target) as env:
        env.configure(connection=conn, version_table=VERSION_TABLE, transaction_per_migration=False)
        ctx = env.get_context()
        before = ctx.get_current_revision()
        if before is None:
            present = set(inspect(conn).get_table_names())
            if set(LEGACY_TABLES) <= present:
                log.info("state store: tables of release 0.1.0 without a schema version: stamping %s", BASELINE)
                ctx.stamp(script, BASELINE)
                before = "legacy"
            elif present & set(LEGACY_TABLES):
                missing = ", ".join(sorted(set(LEGACY_TABLES) - present))
                raise RuntimeError(
                    f"the state database has some of the bot's tables but not {missing} and no "
                    f"{VERSION_TABLE}: restore it from a backup or point 'state' at an empty database"
                )
        with env.begin_transaction():
            env.run_migrations()
        after = ctx.get_current_revision()
    if after != before:
        log.info("state store: schema migrated from %s to %s", before or "empty", after)
    return before, after
