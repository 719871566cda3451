"""Virtual-key lookups without a database query per request.

Keys are looked up by their SHA-256 digest in an in-memory map filled on first use. An entry is trusted
for a short TTL, and the whole map is dropped the moment the identity store's ``limits_version`` moves
(bumped by every key/user/group change, in the same transaction), which the gateway polls cheaply. A
revoke made through this process (``invalidate``) is effective at once; one made elsewhere (CLI, another
worker) within one poll interval. Unknown keys are cached too (negatively), so a client retrying a bad
key cannot turn into a database query per request.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from datetime import datetime

from ccledger.store.identity import IdentityStore, Principal

_MAX_ENTRIES = 100_000


class KeyCache:
    def __init__(self, identity: IdentityStore, clock: Callable[[], datetime], ttl: float = 30.0) -> None:
        self.identity = identity
        self.clock = clock
        self.ttl = ttl
        self._entries: dict[bytes, tuple[Principal | None, float, float | None]] = {}
        self._inflight: dict[bytes, asyncio.Future[Principal | None]] = {}

    def invalidate(self) -> None:
        self._entries.clear()

    async def lookup(self, raw_key: str) -> Principal | None:
        digest = hashlib.sha256(raw_key.encode("utf-8", "surrogateescape")).digest()
        hit = self._entries.get(digest)
        mono = time.monotonic()
        if hit is not None:
            principal, until, expires_s = hit
            if mono < until:
                # The key's own expiry is checked against the injectable clock on every hit.
                if expires_s is not None and self.clock().timestamp() >= expires_s:
                    return None
                return principal
        fut = self._inflight.get(digest)
        if fut is not None:  # collapse concurrent first requests with one key into one query
            return await asyncio.shield(fut)
        fut = asyncio.get_running_loop().create_future()
        self._inflight[digest] = fut
        try:
            now = self.clock()
            principal = await asyncio.to_thread(self.identity.authenticate, raw_key, now)
            ms = principal.key_expires_ms if principal is not None else None
            expires_s = None if ms is None else ms / 1000
            if len(self._entries) >= _MAX_ENTRIES:
                self._entries.clear()
            self._entries[digest] = (principal, mono + self.ttl, expires_s)
            fut.set_result(principal)
            return principal
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # mark retrieved
            raise
        finally:
            del self._inflight[digest]
