"""Shared fixtures: PostgreSQL availability, a store URL on both engines, and the fake upstream.

``store_url`` yields a fresh SQLite file or a private PostgreSQL schema (selected through the
connection's ``search_path``), so tests never see each other's rows and need no truncation order.
The PostgreSQL variants are marked ``postgres`` and skip with the reason when the server is absent.
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


@pytest.fixture(scope="session")
def pg_url(pg_skip_reason: str | None) -> str:
    """The PostgreSQL test database URL; skips the test when the server is not reachable."""
    if pg_skip_reason:
        pytest.skip(pg_skip_reason)
    return PG_URL


def _pg_schema_url(base: str) -> Iterator[str]:
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in base else "?"
    try:
        yield f"{base}{sep}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path, pg_skip_reason) -> Iterator[str]:
    """A URL for an empty, not yet migrated store: a fresh SQLite file, or a private PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
        return
    if pg_skip_reason:
        pytest.skip(pg_skip_reason)
    yield from _pg_schema_url(PG_URL)


@pytest.fixture(scope="session")
def fake_upstream():
    """One real fake Anthropic upstream for the whole session (recording requests)."""
    from tests.support.fake_upstream import FakeUpstream

    upstream = FakeUpstream(record=True).start()
    try:
        yield upstream
    finally:
        upstream.stop()
