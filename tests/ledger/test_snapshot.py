"""A new SQLite ledger is created from the schema snapshot; the snapshot must be exactly what the Alembic
migrations produce, so that a store made either way is the same store."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from ccledger.store import snapshot
from ccledger.store.engine import make_engine, migrate
from ccledger.store.ledger import Ledger
from ccledger.store.migrations import HEAD


def _schema(path: Path) -> list[tuple[str, str, str, str | None]]:
    conn = sqlite3.connect(path)
    rows = conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name").fetchall()
    conn.close()
    return rows


def _alembic_store(path: Path) -> None:
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    engine.dispose()


def test_snapshot_is_what_the_migrations_make(tmp_path):
    via_alembic = tmp_path / "alembic.db"
    _alembic_store(via_alembic)
    conn = sqlite3.connect(via_alembic)
    fresh = snapshot.dump(conn)
    conn.close()
    assert fresh == snapshot.SNAPSHOT.read_text(encoding="utf-8"), (
        "the migrations changed: run `python -m ccledger.store.snapshot` and commit sqlite_schema.sql"
    )
    via_snapshot = tmp_path / "snapshot.db"
    ledger = Ledger(f"sqlite:///{via_snapshot}")
    ledger.migrate()
    ledger.close()
    assert _schema(via_snapshot) == _schema(via_alembic)
    conn = sqlite3.connect(via_snapshot)
    assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [(HEAD,)]
    conn.close()


def test_snapshot_store_works_and_alembic_sees_it_current(tmp_path):
    path = tmp_path / "l.db"
    ledger = Ledger.open(f"sqlite:///{path}")
    assert ledger.count() == 0 and ledger.is_current()
    ledger.close()
    before = _schema(path)
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)  # Alembic finds it at HEAD: nothing to do
    engine.dispose()
    assert _schema(path) == before


def test_two_first_runs_at_once_create_one_schema(tmp_path):
    path = tmp_path / "race.db"
    errors: list[BaseException] = []

    def first_run() -> None:
        try:
            ledger = Ledger(f"sqlite:///{path}")
            ledger.migrate()
            assert ledger.is_current()
            ledger.close()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=first_run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    reference = tmp_path / "ref.db"
    _alembic_store(reference)
    assert _schema(path) == _schema(reference)


def test_an_old_store_still_goes_through_alembic(tmp_path):
    """A store at an older revision is upgraded by the migrations, not by the snapshot."""
    from alembic import command
    from alembic.config import Config

    path = tmp_path / "old.db"
    engine = make_engine(f"sqlite:///{path}")
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(snapshot.__file__).parent / "migrations"))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0002")
    engine.dispose()
    ledger = Ledger(f"sqlite:///{path}")
    assert not ledger.is_current()
    ledger.migrate()
    assert ledger.is_current()
    ledger.close()
    reference = tmp_path / "ref.db"
    _alembic_store(reference)
    assert {r[1] for r in _schema(path)} == {r[1] for r in _schema(reference)}
