"""Small JSON settings in ``settings_kv`` (e.g. models already warned about, applied rate limits)."""

from __future__ import annotations

import json
import time
from typing import Any

from sqlalchemy import Engine, select, update
from sqlalchemy.exc import IntegrityError

from ccledger.store.schema import settings_kv


def get_setting(engine: Engine, key: str) -> Any | None:
    with engine.connect() as conn:
        raw = conn.execute(select(settings_kv.c.value).where(settings_kv.c.key == key)).scalar()
    return None if raw is None else json.loads(raw)


def set_setting(engine: Engine, key: str, value: Any) -> None:
    raw = json.dumps(value, sort_keys=True)
    now = int(time.time() * 1000)
    with engine.begin() as conn:
        done = conn.execute(
            update(settings_kv).where(settings_kv.c.key == key).values(value=raw, updated_ms=now)
        )
        if done.rowcount == 0:
            try:
                with conn.begin_nested():
                    conn.execute(settings_kv.insert().values(key=key, value=raw, updated_ms=now))
            except IntegrityError:
                conn.execute(
                    update(settings_kv).where(settings_kv.c.key == key).values(value=raw, updated_ms=now)
                )
