"""A fresh ledger per test on each engine: a SQLite file, and a private schema in the machine's
PostgreSQL (see ``tests.support.pg`` for skip/fail rules)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.pg import private_schema, skip_or_fail, unreachable_reason


def pg_schema_url() -> Iterator[str]:
    reason = unreachable_reason()
    if reason:
        skip_or_fail(reason)
    with private_schema() as url:
        try:
            yield url
        finally:
            from ccledger.store import engine as eng

            eng._migrated.clear()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def ledger_url(request, tmp_path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
    else:
        yield from pg_schema_url()
