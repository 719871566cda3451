"""The ledger: one schema on SQLite (embedded default) and PostgreSQL (at scale), migrated by Alembic."""
