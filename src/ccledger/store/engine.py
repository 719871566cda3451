"""Engine creation and automatic migration, the same for SQLite and PostgreSQL."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import OperationalError, ProgrammingError

from ccledger.store.migrations import HEAD
from ccledger.store.url import normalise_url

_migrated: set[str] = set()
_lock = threading.Lock()


def make_engine(url: str) -> Engine:
    url = normalise_url(url)
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[1] if ":///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 60})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            # WAL lets a report read while another ccledger process writes; the busy timeout makes two
            # writers queue instead of failing.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=int(os.environ.get("CCLEDGER_POOL_SIZE", "5")))


def current_revision(engine: Engine) -> str | None:
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except (OperationalError, ProgrammingError):
        return None


def migrate(engine: Engine) -> None:
    """Bring the schema to HEAD. Cheap when already there: Alembic is imported only when work is due."""
    key = str(engine.url)
    if key in _migrated:
        return
    with _lock:
        if key in _migrated:
            return
        if current_revision(engine) != HEAD:
            try:
                _run_alembic(engine)
            except (OperationalError, ProgrammingError):
                # Another process migrated the same SQLite file at the same moment; fine if it finished.
                if current_revision(engine) != HEAD:
                    raise
        _migrated.add(key)


def _run_alembic(engine: Engine) -> None:
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Two processes migrating one fresh database at once: serialise them.
            conn.execute(text("SELECT pg_advisory_xact_lock(74656)"))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
