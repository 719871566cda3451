"""Cap reloads never interleave: a periodic reload that read the caps before an admin change must not
put them back after the admin API's own reload installed the new ones."""

from __future__ import annotations

import asyncio
import threading
import time
from types import SimpleNamespace

import pytest

from ccledger.gateway.app import refresh_limits


@pytest.mark.asyncio
async def test_a_slow_periodic_reload_cannot_undo_an_admin_change():
    store = {"version": 1, "caps": ["org $100"]}
    installed: list[list[str]] = []
    first_read = threading.Event()

    class Identity:
        def limits_version(self) -> int:
            return store["version"]

        def list_spend_limits(self) -> list[str]:
            caps = list(store["caps"])
            if not first_read.is_set():  # the periodic reload: reads, then is slow to finish
                first_read.set()
                time.sleep(0.3)
            return caps

        def get_setting(self, _key: str) -> None:
            return None

        def list_users(self) -> list[str]:
            return []

    state = SimpleNamespace(
        identity=Identity(),
        limits=SimpleNamespace(guard=SimpleNamespace(set_limits=installed.append),
                               rate=SimpleNamespace(configure=lambda _rl, users: None)),
        settings=SimpleNamespace(rate_limits=SimpleNamespace(model_dump=dict)),
        keys=SimpleNamespace(invalidate=lambda: None),
        extra={},
        limits_version=0,
    )  # fmt: skip
    periodic = asyncio.create_task(refresh_limits(state))
    while not first_read.is_set():
        await asyncio.sleep(0.01)
    store.update(version=2, caps=["org $100", "interns $0"])  # the admin API commits a change...
    await refresh_limits(state, force=True)  # ...and reloads at once
    await periodic
    assert installed[-1] == ["org $100", "interns $0"]
    assert state.limits_version == 2
