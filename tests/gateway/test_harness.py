"""The test harness itself: CI (CCLEDGER_TEST_REQUIRE_SERVICES=1) must fail, not skip, without PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# One PostgreSQL-backed test per fixture that can skip: tests/conftest.py's ``store_url`` and ``pg_url``
# and tests/store/conftest.py's ``store_url``.
TESTS = [
    "tests/gateway/test_keys.py::test_expired_key_refused[postgres]",
    "tests/store/test_identity.py::test_users_and_groups[postgres]",
]


def _run(require: bool, *args: str) -> tuple[int, str]:
    env = {**os.environ, "CCLEDGER_TEST_PG": "postgresql://postgres@127.0.0.1:1/nowhere"}
    env.pop("CCLEDGER_TEST_REQUIRE_SERVICES", None)
    if require:
        env["CCLEDGER_TEST_REQUIRE_SERVICES"] = "1"
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *args]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    return done.returncode, done.stdout


@pytest.mark.parametrize("require", [False, True], ids=["local", "ci"])
def test_missing_postgres_skips_locally_and_fails_in_ci(require: bool, tmp_path: Path) -> None:
    # ``pg_url`` has no user in the suite yet: a probe outside it, with tests/conftest.py as a plugin.
    probe = tmp_path / "test_pg_url_probe.py"
    probe.write_text("def test_probe(pg_url):\n    assert pg_url\n")
    runs = [_run(require, *TESTS), _run(require, "-p", "tests.conftest", str(probe))]
    for (code, out), n in zip(runs, (2, 1), strict=True):
        summary = out.strip().splitlines()[-1]
        if require:
            assert code == 1, out
            assert f"{n} error" in summary and "skipped" not in summary, out
            assert "CCLEDGER_TEST_REQUIRE_SERVICES is set" in out
        else:
            assert code == 0, out
            assert summary.startswith(f"{n} skipped"), out
