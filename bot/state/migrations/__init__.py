"""Alembic migrations of the state store, run by ``bot.state.migrate`` (no alembic.ini, no env.py)."""
