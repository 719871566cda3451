"""A fresh ledger per test on each engine: a SQLite file, and a private schema in the machine's
PostgreSQL (skipped with the reason when no server answers, failed instead when CI requires it)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

PG_BASE = os.environ.get("CCLEDGER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def pg_available() -> str | None:
    try:
        import psycopg

        with psycopg.connect(PG_BASE, connect_timeout=3):
            return None
    except Exception as exc:  # any failure to connect means "absent" here
        return f"PostgreSQL not reachable at {PG_BASE}: {exc}"


def pg_schema_url() -> Iterator[str]:
    reason = pg_available()
    if reason:
        if os.environ.get("CCLEDGER_TEST_REQUIRE_SERVICES"):
            pytest.fail(reason)
        pytest.skip(reason)
    import psycopg

    schema = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(PG_BASE, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{PG_BASE}?options=-csearch_path%3D{schema}"
    finally:
        from ccledger.store import engine as eng

        eng._migrated.clear()
        with psycopg.connect(PG_BASE, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def ledger_url(request, tmp_path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
    else:
        yield from pg_schema_url()
