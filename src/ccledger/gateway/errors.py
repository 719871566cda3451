"""Errors the gateway itself raises, in Anthropic's envelope, so Claude Code and SDKs parse them as usual.

Upstream errors never pass through here: they are relayed byte for byte (gateway-protocol.md §6).
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

Send = Callable[[dict[str, Any]], Awaitable[None]]

_counter = 0
_prefix = os.urandom(6).hex()


def new_request_id() -> str:
    """``req_gw…``: unique per process without a syscall per request (random prefix + counter)."""
    global _counter
    _counter += 1
    return f"req_gw{_prefix}{_counter:010x}"


def envelope(err_type: str, message: str, request_id: str) -> bytes:
    return json.dumps(
        {"type": "error", "error": {"type": err_type, "message": message}, "request_id": request_id},
        separators=(",", ":"),
    ).encode()


async def send_error(
    send: Send,
    status: int,
    err_type: str,
    message: str,
    request_id: str | None = None,
    extra_headers: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    rid = request_id or new_request_id()
    body = envelope(err_type, message, rid)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"request-id", rid.encode()),
        *extra_headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
