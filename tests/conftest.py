"""Shared fixtures: PostgreSQL availability, a store URL on both engines, and the fake upstream.

``store_url`` yields a migrated, empty store: a fresh copy of a template SQLite file, or a private
PostgreSQL schema (selected through the connection's ``search_path``) truncated before each test.
The PostgreSQL variants are marked ``postgres`` and skip with the reason when the server is absent, or
fail when ``CCLEDGER_TEST_REQUIRE_SERVICES`` is set (CI sets it, so a missing service cannot turn the
PostgreSQL half of the suite into silent skips).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.pg import PG_URL, private_schema, skip_or_fail, unreachable_reason


@pytest.fixture(scope="session")
def pg_skip_reason() -> str | None:
    return unreachable_reason()


@pytest.fixture(scope="session")
def pg_url(pg_skip_reason: str | None) -> str:
    """The PostgreSQL test database URL; skips (or fails, see ``skip_or_fail``) when it is unreachable."""
    if pg_skip_reason:
        skip_or_fail(pg_skip_reason)
    return PG_URL


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated SQLite file per session; tests get a copy (a migration per test costs ~0.2 s)."""
    from ccledger.store.ledger import Ledger

    path = tmp_path_factory.mktemp("template") / "ledger.db"
    Ledger.open(f"sqlite:///{path}").close()
    return path


@pytest.fixture(scope="session")
def _pg_schema(pg_skip_reason: str | None) -> Iterator[str]:
    """One private, migrated PostgreSQL schema per session; tables are truncated before each test."""
    if pg_skip_reason:
        yield ""
        return
    from ccledger.store.ledger import Ledger

    with private_schema() as url:
        Ledger.open(url).close()
        yield url


def _truncate(url: str) -> None:
    import psycopg

    from ccledger.store.schema import metadata

    schema = url.rsplit("%3D", 1)[1]
    names = ", ".join(f'"{schema}"."{t.name}"' for t in metadata.sorted_tables)
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {names} RESTART IDENTITY")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path, pg_skip_reason: str | None) -> Iterator[str]:
    """A migrated, empty store: a copy of a template SQLite file, or the session's PostgreSQL schema
    with every table truncated. The PostgreSQL variant skips (with the reason) when the server is absent,
    or fails when services are required."""
    if request.param == "sqlite":
        target = tmp_path / "ledger.db"
        shutil.copyfile(request.getfixturevalue("_sqlite_template"), target)
        yield f"sqlite:///{target}"
        return
    if pg_skip_reason:
        skip_or_fail(pg_skip_reason)
    url = request.getfixturevalue("_pg_schema")
    _truncate(url)
    yield url


@pytest.fixture(scope="session")
def fake_upstream():
    """One real fake Anthropic upstream for the whole session (recording requests)."""
    from tests.support.fake_upstream import FakeUpstream

    upstream = FakeUpstream(record=True).start()
    try:
        yield upstream
    finally:
        upstream.stop()
