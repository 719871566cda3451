"""The machine's PostgreSQL for tests: whether it answers, and private schemas to isolate tests.

Without a server the PostgreSQL variants of tests skip with the reason, or fail when
``CCLEDGER_TEST_REQUIRE_SERVICES`` is set (CI sets it, so a missing service cannot turn half of the suite
into silent skips).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

PG_URL = os.environ.get("CCLEDGER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REQUIRE_SERVICES_ENV = "CCLEDGER_TEST_REQUIRE_SERVICES"


def unreachable_reason() -> str | None:
    try:
        import psycopg

        with psycopg.connect(PG_URL, connect_timeout=3):
            return None
    except Exception as exc:  # any failure means "no server to test against"
        return f"PostgreSQL at {PG_URL} unreachable: {exc.__class__.__name__}: {exc}"


def skip_or_fail(reason: str) -> None:
    """Skip when a service is absent, unless the run requires services (CI): then fail."""
    if os.environ.get(REQUIRE_SERVICES_ENV):
        pytest.fail(f"{reason} ({REQUIRE_SERVICES_ENV} is set)", pytrace=False)
    pytest.skip(reason)


@contextmanager
def private_schema() -> Iterator[str]:
    """A URL whose connections see only a new, empty schema (via ``search_path``); dropped afterwards."""
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
