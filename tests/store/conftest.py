"""Store fixtures: every identity test runs on a fresh SQLite file and on a private PostgreSQL schema.

PostgreSQL isolation uses a throw-away schema per test, selected through the connection's
``search_path`` option, so tests never see each other's rows and need no truncation order. Without a
server the PostgreSQL variants skip, or fail when ``CCLEDGER_TEST_REQUIRE_SERVICES`` is set (CI).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

PG_URL = os.environ.get("CCLEDGER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def _pg_unreachable_reason() -> str | None:
    try:
        import psycopg

        with psycopg.connect(PG_URL, connect_timeout=3):
            return None
    except Exception as exc:  # any failure means "no server to test against"
        return f"PostgreSQL at {PG_URL} unreachable: {exc.__class__.__name__}: {exc}"


@pytest.fixture(scope="session")
def pg_skip_reason() -> str | None:
    return _pg_unreachable_reason()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path, pg_skip_reason) -> Iterator[str]:
    """A URL for an empty, not yet migrated store."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'identity.db'}"
        return
    if pg_skip_reason:
        if os.environ.get("CCLEDGER_TEST_REQUIRE_SERVICES"):  # CI: a missing server is a failure
            pytest.fail(f"{pg_skip_reason} (CCLEDGER_TEST_REQUIRE_SERVICES is set)", pytrace=False)
        pytest.skip(pg_skip_reason)
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in PG_URL else "?"
    try:
        yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def identity(store_url: str):
    """An IdentityStore over a freshly migrated store."""
    from ccledger.store.identity import IdentityStore
    from ccledger.store.ledger import Ledger

    ledger = Ledger.open(store_url)
    try:
        yield IdentityStore(ledger.engine)
    finally:
        ledger.close()
