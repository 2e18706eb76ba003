# Alembic revisions of the state store (Alembic skips this file). Never edit a released revision: add one.
