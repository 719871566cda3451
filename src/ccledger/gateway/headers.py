"""Header work on the hot path: what goes upstream, what comes back, and the developer's own limits.

Header names arrive lower-cased from the ASGI server, so every check is a set lookup on bytes. Nothing is
allowlisted: every ``anthropic-*`` and ``x-claude-code-*`` header reaches the upstream unchanged
(gateway-protocol.md §2); only hop-by-hop headers and the client's gateway credential are removed.
"""

from __future__ import annotations

import functools
import math
import re
from datetime import UTC, datetime

# RFC 9110 §7.6.1 hop-by-hop headers, plus ones the HTTP client recomputes for the new connection.
HOP_BY_HOP = frozenset(
    {
        b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te", b"trailer",
        b"trailers", b"transfer-encoding", b"upgrade", b"host", b"content-length",
    }
)  # fmt: skip
CLIENT_CREDENTIALS = frozenset({b"x-api-key", b"authorization"})
# ``expect``: the gateway already holds the whole body, so a 100-continue handshake has no purpose.
_REQ_DROP = HOP_BY_HOP | CLIENT_CREDENTIALS | {b"accept-encoding", b"expect"}
# Response: hop-by-hop plus content-length (the ASGI server frames the body itself).
_RESP_DROP = HOP_BY_HOP
_UPSTREAM_RL_PREFIX = b"anthropic-ratelimit-"


def client_key(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The gateway credential: ``x-api-key`` or ``Authorization: Bearer`` (apiKeyHelper sends both).

    The first non-empty one wins, ``x-api-key`` before the bearer token: an empty ``x-api-key`` next to
    a valid bearer token (a client that always sends the header) must not hide the token.
    """
    api_key = bearer = None
    for k, v in headers:
        if k == b"x-api-key":
            if api_key is None:
                api_key = v.decode("latin-1").strip() or None
        elif k == b"authorization" and bearer is None:
            val = v.decode("latin-1").strip()
            if val[:7].lower() == "bearer ":
                bearer = val[7:].strip() or None
    return api_key or bearer


def upstream_request_headers(
    headers: list[tuple[bytes, bytes]], credential: tuple[str, str] | None
) -> list[bytes]:
    """Client headers as ready ``name: value\r\n`` lines, minus hop-by-hop and credentials, plus the
    upstream credential. Names and values pass through byte for byte (duplicates kept, in order).

    ``accept-encoding`` is pinned to identity: metering must read the usage in the response, and
    decompressing every relayed chunk would cost more than it saves on a local hop.
    """
    out = [k + b": " + v + b"\r\n" for k, v in headers if k not in _REQ_DROP]
    out.append(b"accept-encoding: identity\r\n")
    if credential is not None:
        out.append(credential_line(credential))
    return out


@functools.lru_cache(maxsize=8)
def credential_line(credential: tuple[str, str]) -> bytes:
    """The upstream credential as a header line; one credential per gateway, so formatted once."""
    return f"{credential[0]}: {credential[1]}\r\n".encode("latin-1")


def downstream_headers(raw: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Upstream response headers (names already lower-cased) minus hop-by-hop and the shared-quota
    ``anthropic-ratelimit-*`` ones."""
    return [(k, v) for k, v in raw if k not in _RESP_DROP and not k.startswith(_UPSTREAM_RL_PREFIX)]


def relay_headers(raw: list[tuple[bytes, bytes]]) -> tuple[list[tuple[bytes, bytes]], str | None, bytes]:
    """``downstream_headers`` plus, from the same pass, the upstream's first ``request-id`` (decoded)
    and ``content-type`` (empty if none): the metered path needs all three for every response."""
    out: list[tuple[bytes, bytes]] = []
    request_id: str | None = None
    content_type = b""
    for k, v in raw:
        if k in _RESP_DROP or k.startswith(_UPSTREAM_RL_PREFIX):
            continue
        if k == b"request-id":
            if request_id is None:
                request_id = v.decode("latin-1")
        elif k == b"content-type" and not content_type:
            content_type = v
        out.append((k, v))
    return out, request_id, content_type


MAX_CLIENT_VERSION = 64  # the ledger column is String(64)
_UA = re.compile(r"claude-cli/([0-9][\w.+-]{0,63})")  # at most MAX_CLIENT_VERSION characters


def client_version(user_agent: str) -> str:
    """``claude-cli/2.1.239 (external, cli)`` -> ``2.1.239``; other clients -> their first product token.
    Either is clamped to ``MAX_CLIENT_VERSION`` characters."""
    if not user_agent:
        return ""
    m = _UA.search(user_agent)
    if m:
        return m.group(1)[:MAX_CLIENT_VERSION]
    return user_agent.split(" ", 1)[0][:MAX_CLIENT_VERSION]


def rfc3339(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def retry_after_seconds(seconds: float) -> bytes:
    return str(max(1, math.ceil(seconds))).encode()
