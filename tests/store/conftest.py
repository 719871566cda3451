"""Store fixtures: every identity test runs on a fresh SQLite file and on a private PostgreSQL schema.

PostgreSQL isolation uses a throw-away schema per test, selected through the connection's
``search_path`` option, so tests never see each other's rows and need no truncation order. Without a
server the PostgreSQL variants skip, or fail when ``CCLEDGER_TEST_REQUIRE_SERVICES`` is set (CI).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.pg import private_schema, skip_or_fail, unreachable_reason


@pytest.fixture(scope="session")
def pg_skip_reason() -> str | None:
    return unreachable_reason()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path, pg_skip_reason) -> Iterator[str]:
    """A URL for an empty, not yet migrated store."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'identity.db'}"
        return
    if pg_skip_reason:
        skip_or_fail(pg_skip_reason)
    with private_schema() as url:
        yield url


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
