"""The hot path: ``POST /v1/messages`` and ``/v1/messages/count_tokens`` as a raw ASGI handler.

Why raw ASGI instead of a framework route: every microsecond here is added latency on every Claude Code
request. The handler touches only what it must: the header list (credential, attribution), the body bytes
(passed upstream untouched; one msgspec pass, ``body.parse_head``, reads the few fields admission
prices), and the response (relayed chunk by chunk while an incremental parser picks out usage).
Everything else, ledger writes included, happens off the request path.

Limits: admission (spend reservation + rate-limit buckets) runs before forwarding; every exit path after
it either settles (the request ran and was metered) or releases (it failed or never started), see
``limits.Ticket``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from ccledger.gateway.body import BodyHead, parse_head
from ccledger.gateway.errors import new_request_id, send_error
from ccledger.gateway.headers import (
    client_key,
    client_version,
    downstream_headers,
    relay_headers,
    upstream_request_headers,
)
from ccledger.gateway.limits import Rejection, Ticket
from ccledger.gateway.metering import Attribution, build_row
from ccledger.gateway.upstream import UpstreamResponse
from ccledger.sources.anthropic_usage import StreamMeter, Usage, parse_message_json

if TYPE_CHECKING:
    from ccledger.gateway.state import GatewayState

log = logging.getLogger("ccledger.gateway")

MESSAGES = "/v1/messages"
COUNT_TOKENS = "/v1/messages/count_tokens"
LEASE_RENEW_S = 300.0
MAX_BODY = 32 * 1024 * 1024  # the API's own limit for Messages and count_tokens


async def read_body(receive: Any) -> bytes | None:
    """The whole request body, or None if the client went away or it exceeds ``MAX_BODY``."""
    msg = await receive()
    body = msg.get("body", b"")
    if not msg.get("more_body", False):
        return body if msg["type"] == "http.request" else None
    parts = [body]
    size = len(body)
    while True:
        msg = await receive()
        if msg["type"] != "http.request":
            return None
        chunk = msg.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            return None
        parts.append(chunk)
        if not msg.get("more_body", False):
            return b"".join(parts)


def _attribution(headers: list[tuple[bytes, bytes]]) -> Attribution:
    a = Attribution()
    for k, v in headers:
        if k.startswith(b"x-claude-code-"):
            if k == b"x-claude-code-session-id":
                a.session_id = v.decode("latin-1")[:200]
            elif k == b"x-claude-code-agent-id":
                a.agent_id = v.decode("latin-1")[:200]
            elif k == b"x-claude-code-parent-agent-id":
                a.parent_agent_id = v.decode("latin-1")[:200]
        elif k == b"user-agent":
            a.user_agent = v.decode("latin-1")
            a.client_version = client_version(a.user_agent)
    return a


class Proxy:
    def __init__(self, state: GatewayState) -> None:
        self.state = state

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope["path"]
        started = time.perf_counter()
        route = "messages" if path == MESSAGES else "count_tokens"
        status = await self._handle(scope, receive, send, metered=path == MESSAGES)
        self.state.metrics.observe(route, status, time.perf_counter() - started)

    async def _handle(self, scope: dict[str, Any], receive: Any, send: Any, *, metered: bool) -> int:
        st = self.state
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        if scope["method"] != "POST":
            await send_error(send, 405, "invalid_request_error", f"Method {scope['method']} not allowed")
            return 405
        raw_key = client_key(headers)
        if raw_key is None:
            await send_error(send, 401, "authentication_error", "missing gateway key (x-api-key or Bearer)")
            return 401
        try:
            principal = await st.keys.lookup(raw_key)
        except Exception as exc:
            log.error("key lookup failed: %s", type(exc).__name__)
            await send_error(send, 503, "api_error", "gateway identity store unavailable")
            return 503
        if principal is None:
            await send_error(send, 401, "authentication_error", "invalid, expired or revoked gateway key")
            return 401
        body = await read_body(receive)
        if body is None:
            await send_error(send, 413, "request_too_large", "request body too large or incomplete")
            return 413

        qs = scope.get("query_string", b"")
        raw_path = scope.get("raw_path") or scope["path"].encode()
        url = raw_path + b"?" + qs if qs else raw_path
        up_headers = upstream_request_headers(headers, st.upstream_credential)
        if not metered:
            return await self._forward_plain(url, up_headers, body, send)

        head = parse_head(body)
        attribution = _attribution(headers)
        gw_rid = new_request_id()
        verdict = await st.limits.admit(principal, head, len(body), attribution.session_id, gw_rid)
        if isinstance(verdict, Rejection):
            rej = verdict
            st.metrics.rejections.labels(rej.limit).inc()
            log.info("limit_reject user=%s key=%s limit=%s", principal.user_id, principal.key_id, rej.limit)
            await send_error(send, rej.status, rej.err_type, rej.message, gw_rid, rej.headers)
            return rej.status
        call = _Call(principal, attribution, verdict, gw_rid, head)
        try:
            return await self._forward_metered(url, up_headers, body, call, receive, send)
        finally:
            # Safe no-op when already settled: a reservation never outlives its request.
            await verdict.release()

    async def _forward_plain(self, url: bytes, up_headers: list[bytes], body: bytes, send: Any) -> int:
        """count_tokens: forwarded as is, never limited or metered (counting is free)."""
        try:
            resp = await self.state.upstream.request(b"POST", url, up_headers, body)
            try:
                payload = await resp.read()
            finally:
                resp.release()
            out = downstream_headers(resp.headers)
            out.append((b"content-length", str(len(payload)).encode()))
            await send({"type": "http.response.start", "status": resp.status, "headers": out})
            await send({"type": "http.response.body", "body": payload})
            return resp.status
        except (ConnectionError, TimeoutError) as exc:
            log.warning("upstream unreachable: %s", type(exc).__name__)
            await send_error(send, 502, "api_error", "upstream unavailable")
            return 502

    async def _forward_metered(
        self, url: bytes, up_headers: list[bytes], body: bytes, call: _Call, receive: Any, send: Any
    ) -> int:
        st = self.state
        try:
            # The limit headers are formatted while the upstream works on the request, not after.
            resp = await st.upstream.request(b"POST", url, up_headers, body, sent=call.adm.response_headers)
        except (ConnectionError, TimeoutError) as exc:
            log.warning("upstream unreachable: %s", type(exc).__name__)
            await send_error(send, 502, "api_error", "upstream unavailable", call.gw_rid)
            return 502
        try:
            out, up_rid, ctype = relay_headers(resp.headers)
            if resp.status == 200 and ctype.startswith(b"text/event-stream"):
                out.extend(call.adm.response_headers())
                return await self._relay_stream(resp, out, call, up_rid, receive, send)
            try:
                payload = await resp.read()
            except (ConnectionError, TimeoutError) as exc:
                # Nothing was sent yet: the client gets our envelope; nothing is metered and the caller's
                # ``finally`` releases the reservation.
                log.warning("upstream failed mid-response: %s", type(exc).__name__)
                await send_error(
                    send, 502, "api_error", "upstream connection failed while sending its response",
                    call.gw_rid,
                )  # fmt: skip
                return 502
            # Upstream errors pass through unmodified; a failed request costs nothing.
            if resp.status == 200:
                out.extend(call.adm.response_headers())
            out.append((b"content-length", str(len(payload)).encode()))
            try:
                await send({"type": "http.response.start", "status": resp.status, "headers": out})
                await send({"type": "http.response.body", "body": payload})
            finally:
                # Usage is read and settled right after the body is handed to the server (off the
                # client's latency) and before this handler returns, also when the client vanished
                # mid-send: the reservation holds the room until then, so caps hold; the caller's
                # ``release`` is then a no-op.
                if resp.status == 200:
                    parsed = parse_message_json(payload)
                    if parsed.usage is not None:
                        await self._meter(
                            call, parsed.usage, parsed.model, parsed.message_id, up_rid, aborted=False,
                            completed=True,
                        )  # fmt: skip
            return resp.status
        finally:
            resp.release()

    async def _relay_stream(
        self,
        resp: UpstreamResponse,
        out: list[tuple[bytes, bytes]],
        call: _Call,
        up_rid: str | None,
        receive: Any,
        send: Any,
    ) -> int:
        meter = StreamMeter()
        aborted = False
        upstream_cut = False

        async def watch() -> None:
            # After the body is read, the next ASGI message is the client's disconnect.
            nonlocal aborted
            while True:
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    aborted = True
                    resp.close()  # stop reading and free the upstream connection at once
                    return

        watcher = asyncio.create_task(watch())
        try:
            await send({"type": "http.response.start", "status": 200, "headers": out})
            renew_at = time.monotonic() + LEASE_RENEW_S
            next_chunk = resp.next_chunk  # awaited directly: an async generator costs more per chunk
            while (chunk := await next_chunk()) is not None:
                meter.feed(chunk)
                if time.monotonic() > renew_at:  # a very long stream keeps its spend reservation alive
                    renew_at = time.monotonic() + LEASE_RENEW_S
                    await call.adm.extend()
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                if aborted:
                    break
        except (ConnectionError, TimeoutError) as exc:
            if not aborted:
                upstream_cut = True
                log.warning("upstream stream cut: %s", type(exc).__name__)
        finally:
            watcher.cancel()
        meter.feed(b"\n")
        # Metered before the final empty frame, so a client that has seen the end sees settled spend.
        if meter.error_type is not None or (upstream_cut and not meter.saw_final_usage):
            # The upstream failed the request mid-stream: failed requests cost nothing.
            log.info("stream error user=%s type=%s", call.principal.user_id, meter.error_type or "cut")
        else:
            usage = meter.usage(aborted=aborted)
            if usage is not None:  # None: ended before message_start, nothing ran that we could bill
                # Only a stream that reached message_stop teaches the estimator: an aborted one is billed
                # a floor, and a low guess is what loosens the expected estimator's bound.
                await self._meter(
                    call, usage, meter.model, meter.message_id, up_rid,
                    aborted=aborted and not meter.finished, completed=meter.finished,
                )  # fmt: skip
        if aborted:
            return 499
        with contextlib.suppress(Exception):
            await send({"type": "http.response.body", "body": b""})
        return 200

    async def _meter(
        self, call: _Call, usage: Usage, model: str | None, message_id: str | None, up_rid: str | None,
        *, aborted: bool, completed: bool,
    ) -> None:  # fmt: skip
        """Price, settle and queue the ledger row. Never raises: metering must not break a response
        (the error is logged, without prompt data)."""
        st = self.state
        principal = call.principal
        model = model or call.head.model or ""
        try:
            row = build_row(
                st.book,
                principal=principal,
                attribution=call.attribution,
                usage=usage,
                model=model,
                ts=st.clock(),
                message_id=message_id,
                upstream_request_id=up_rid,
                gateway_request_id=call.gw_rid,
                duration_ms=int((time.perf_counter() - call.t0) * 1000),
                aborted=aborted,
                speed=call.head.speed,
            )
            cost = row.record.cost_nanos or 0
            await call.adm.settle(cost, usage.tokens, completed=completed)
            st.writer.submit(row)
            st.metrics.record_usage(row.record)
        except Exception:
            log.exception("metering failed user=%s model=%s", principal.user_id, model)
            return
        if not log.isEnabledFor(logging.DEBUG):  # (the arguments alone cost a few µs a request)
            return
        t = usage.tokens
        log.debug(
            "metered user=%s key=%s session=%s model=%s cost_nanos=%d in=%d out=%d cw=%d cr=%d%s",
            principal.user_id, principal.key_id, call.attribution.session_id, model, cost, t.input, t.output,
            t.cache_write, t.cache_read, " aborted" if aborted else "",
        )  # fmt: skip


class _Call:
    """One admitted Messages request: who, its attribution, its limits ticket and when it started."""

    __slots__ = ("adm", "attribution", "gw_rid", "head", "principal", "t0")

    def __init__(self, principal: Any, attribution: Attribution, adm: Ticket, gw_rid: str, head: BodyHead):
        self.principal = principal
        self.attribution = attribution
        self.adm = adm
        self.gw_rid = gw_rid
        self.head = head
        self.t0 = time.perf_counter()
