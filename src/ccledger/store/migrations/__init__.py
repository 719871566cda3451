"""Alembic migrations, applied automatically on first use (see ``store.engine.migrate``)."""

# The newest revision id. `store.engine` compares the database's alembic_version with this to skip
# importing Alembic on every run; a test checks it matches Alembic's own head.
HEAD = "0003"
