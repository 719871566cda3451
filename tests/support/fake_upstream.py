"""A fake Anthropic Messages API upstream: a real aiohttp HTTP server on 127.0.0.1.

Why a real server rather than a mocked transport: the gateway under test (and the
benchmark in ``bench/gateway.py``) must be exercised over real sockets, with real
chunked SSE framing, real disconnects and real header handling, or the tests would
prove nothing about the relay. The server is deliberately cheap per request (no
router, no logging, pre-serialised bytes) because the benchmark measures sub-
millisecond gateway overheads and the upstream must not be the noise floor.

Behaviour is chosen per request with headers so tests never need to alter the body
(the gateway must forward bodies byte-exactly, and tests assert exactly that):

``x-fake-scenario``
    ``ok`` (default) | ``echo`` (alias of ``ok``; states "I only care about what was
    recorded") | ``stream_error`` | ``slow`` | ``hang_after_start`` |
    ``error:<status>[:<type>]`` (e.g. ``error:529:overloaded_error``).
``x-fake-usage``
    JSON object merged over :data:`DEFAULT_USAGE` (see :func:`merge_usage`).
``x-fake-chunks``
    integer N (N generated text deltas) or a JSON list of strings (exact deltas).
    Default 3. The non-streaming text is the concatenation of the same chunks.
``x-fake-delta-usage``
    ``full`` (default; ``message_delta.usage`` repeats the cumulative counts, without
    the 5m/1h split) or ``output`` (only ``output_tokens``, the older API shape).
``x-fake-delay-ms``
    default 200. ``slow``: gap between consecutive events, with a ``ping`` halfway
    through each gap. ``hang_after_start``: one silent stall after the first half
    (rounded up) of the deltas, then the stream finishes normally. ``stream_error``
    cuts at the same point and sends ``event: error`` instead.
``x-fake-error-message``
    overrides the ``error.message`` of error scenarios and of ``stream_error``.
``x-fake-retry-after``
    added as ``retry-after`` to error-scenario responses (absent otherwise, as on
    Anthropic's spend-cap 429).

Every response carries a unique ``request-id`` (``req_…``) and the
``anthropic-ratelimit-*`` headers in :data:`RATELIMIT_HEADERS` (the shared org quota a
gateway must strip).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import secrets
import signal
import threading
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

try:  # msgspec is a ccledger dependency and parses a 400 KiB body several times faster.
    import msgspec

    class _BodyHead(msgspec.Struct):
        """Only the two body fields the fake needs; everything else is skipped unparsed."""

        model: Any = None
        stream: Any = False

    _head_decoder = msgspec.json.Decoder(_BodyHead)

    def _parse_head(body: bytes) -> tuple[Any, bool]:
        try:
            head = _head_decoder.decode(body)
        except msgspec.DecodeError as exc:
            raise _BadRequest(f"request body is not a JSON object: {exc}") from None
        return head.model, head.stream is True

except ImportError:  # pragma: no cover - fallback when msgspec is absent

    def _parse_head(body: bytes) -> tuple[Any, bool]:
        try:
            obj = json.loads(body)
        except ValueError as exc:
            raise _BadRequest(f"request body is not valid JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise _BadRequest("request body is not a JSON object")
        return obj.get("model"), obj.get("stream") is True


__all__ = [
    "DEFAULT_USAGE",
    "RATELIMIT_HEADERS",
    "FakeUpstream",
    "RecordedRequest",
    "main",
    "merge_usage",
    "parse_sse",
]

DEFAULT_MODEL = "claude-sonnet-4-5"
DEFAULT_CHUNKS = 3
DEFAULT_DELAY_MS = 200.0
MAX_CHUNKS = 100_000

#: Distinct, non-round numbers so a test can tell which field ended up where.
DEFAULT_USAGE: dict[str, Any] = {
    "input_tokens": 21,
    "cache_creation_input_tokens": 300,
    "cache_read_input_tokens": 4000,
    "cache_creation": {"ephemeral_5m_input_tokens": 200, "ephemeral_1h_input_tokens": 100},
    "output_tokens": 57,
    "server_tool_use": {"web_search_requests": 0},
    "service_tier": "standard",
    "inference_geo": "global",
}

#: Fields a ``full`` ``message_delta.usage`` repeats (cumulative; never the 5m/1h split).
_DELTA_FULL_FIELDS = (
    "input_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "output_tokens",
    "server_tool_use",
)

#: Static rate-limit headers sent on every response; a gateway must not pass them on.
RATELIMIT_HEADERS: dict[str, str] = {
    "anthropic-ratelimit-requests-limit": "4000",
    "anthropic-ratelimit-requests-remaining": "3999",
    "anthropic-ratelimit-requests-reset": "2026-01-01T00:00:01Z",
    "anthropic-ratelimit-tokens-limit": "2400000",
    "anthropic-ratelimit-tokens-remaining": "2399000",
    "anthropic-ratelimit-tokens-reset": "2026-01-01T00:00:01Z",
    "anthropic-ratelimit-input-tokens-limit": "2000000",
    "anthropic-ratelimit-input-tokens-remaining": "1999000",
    "anthropic-ratelimit-input-tokens-reset": "2026-01-01T00:00:01Z",
    "anthropic-ratelimit-output-tokens-limit": "400000",
    "anthropic-ratelimit-output-tokens-remaining": "400000",
    "anthropic-ratelimit-output-tokens-reset": "2026-01-01T00:00:00Z",
    "anthropic-ratelimit-unified-status": "allowed",
}

#: Default ``error.type`` per HTTP status, used when the scenario names only a status.
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}

_ERROR_MESSAGES = {"overloaded_error": "Overloaded"}

_MODELS = (
    ("claude-opus-4-6", "Claude Opus 4.6", "2026-02-05T00:00:00Z"),
    ("claude-sonnet-4-5-20250929", "Claude Sonnet 4.5", "2025-09-29T00:00:00Z"),
    ("claude-haiku-4-5-20251001", "Claude Haiku 4.5", "2025-10-01T00:00:00Z"),
)

# Sentinels replaced per request; NUL bytes keep them from colliding with test text.
_ID_SENTINEL = "\x00fake-id\x00"
_MODEL_SENTINEL = "\x00fake-model\x00"


class _BadRequest(Exception):
    """A malformed request or ``x-fake-*`` knob: answered with a 400 envelope, never a crash."""


@dataclass(slots=True)
class RecordedRequest:
    """One request exactly as the fake received it, for byte-exact forwarding assertions.

    ``path`` is the raw request target including the query string; ``headers`` keeps
    the wire order, original name case and duplicates; ``body`` is the raw (not
    decompressed) body bytes.
    """

    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        """First value of header ``name`` (case-insensitive), or None."""
        lname = name.lower()
        for key, value in self.headers:
            if key.lower() == lname:
                return value
        return None

    def header_values(self, name: str) -> list[str]:
        """All values of header ``name`` (case-insensitive), in wire order."""
        lname = name.lower()
        return [value for key, value in self.headers if key.lower() == lname]

    def json(self) -> Any:
        """The body parsed as JSON (convenience for tests that don't need byte equality)."""
        return json.loads(self.body)


def merge_usage(override: dict[str, Any] | None) -> dict[str, Any]:
    """Merge a test's usage override over :data:`DEFAULT_USAGE`, keeping it self-consistent.

    Why the extra rules: a test that sets only ``cache_creation_input_tokens`` should
    not get a stale default 5m/1h split that no longer sums to it, and a test that sets
    only the split should get the matching total. So:

    * total given, split not given -> split = all 5m (``{5m: total, 1h: 0}``);
    * split given (dict), total not given -> missing split keys are 0, total = sum;
    * both given -> both taken verbatim (lets a test build deliberately odd usage);
    * any field may be ``null``; unknown fields are passed through.
    """
    usage = {k: (dict(v) if isinstance(v, dict) else v) for k, v in DEFAULT_USAGE.items()}
    if not override:
        return usage
    usage.update(override)
    has_total = "cache_creation_input_tokens" in override
    has_split = "cache_creation" in override
    if has_total and not has_split:
        total = override["cache_creation_input_tokens"]
        usage["cache_creation"] = {
            "ephemeral_5m_input_tokens": total or 0,
            "ephemeral_1h_input_tokens": 0,
        }
    elif has_split and not has_total and isinstance(override["cache_creation"], dict):
        split = {
            "ephemeral_5m_input_tokens": 0,
            "ephemeral_1h_input_tokens": 0,
            **override["cache_creation"],
        }
        usage["cache_creation"] = split
        usage["cache_creation_input_tokens"] = sum(v for v in split.values() if isinstance(v, int))
    return usage


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _sse(event: str, data: Any) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + _dumps(data) + b"\n\n"


_PING = _sse("ping", {"type": "ping"})


def _split_template(serialised: bytes) -> tuple[bytes, bytes, bytes]:
    """Split bytes around the id and model sentinels so a response is 5 concatenations."""
    id_mark = _dumps(_ID_SENTINEL)
    model_mark = _dumps(_MODEL_SENTINEL)
    head, rest = serialised.split(id_mark, 1)
    middle, tail = rest.split(model_mark, 1)
    return head, middle, tail


def _parse_chunks(raw: str | None) -> list[str]:
    if raw is None:
        count = DEFAULT_CHUNKS
    else:
        raw = raw.strip()
        if raw.startswith("["):
            try:
                chunks = json.loads(raw)
            except ValueError as exc:
                raise _BadRequest(f"x-fake-chunks is not valid JSON: {exc}") from None
            if not all(isinstance(c, str) for c in chunks) or len(chunks) > MAX_CHUNKS:
                raise _BadRequest("x-fake-chunks must be a JSON list of strings")
            return chunks
        try:
            count = int(raw)
        except ValueError:
            raise _BadRequest("x-fake-chunks must be an integer or a JSON list of strings") from None
        if not 0 <= count <= MAX_CHUNKS:
            raise _BadRequest(f"x-fake-chunks must be between 0 and {MAX_CHUNKS}")
    return [f"part{i} " for i in range(count)]


class _Plan:
    """Everything about a response that depends only on the ``x-fake-*`` knobs, pre-serialised.

    Plans are cached per distinct knob combination, so the hot path for repeated
    requests is a dict lookup plus a few byte concatenations.
    """

    __slots__ = (
        "count_tokens_body",
        "error_event",
        "frames",
        "head_frames",
        "json_template",
        "start_template",
        "usage",
    )

    def __init__(self, usage_raw: str | None, chunks_raw: str | None, delta_raw: str | None) -> None:
        override: dict[str, Any] | None = None
        if usage_raw is not None:
            try:
                override = json.loads(usage_raw)
            except ValueError as exc:
                raise _BadRequest(f"x-fake-usage is not valid JSON: {exc}") from None
            if not isinstance(override, dict):
                raise _BadRequest("x-fake-usage must be a JSON object")
        usage = merge_usage(override)
        self.usage = usage
        chunks = _parse_chunks(chunks_raw)
        delta_mode = (delta_raw or "full").strip().lower()
        if delta_mode not in ("full", "output"):
            raise _BadRequest("x-fake-delta-usage must be 'full' or 'output'")

        message = {
            "id": _ID_SENTINEL,
            "type": "message",
            "role": "assistant",
            "model": _MODEL_SENTINEL,
            "content": [{"type": "text", "text": "".join(chunks)}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": usage,
        }
        self.json_template = _split_template(_dumps(message))

        start_usage = dict(usage)
        start_usage["output_tokens"] = 1
        start_message = {**message, "content": [], "stop_reason": None, "usage": start_usage}
        self.start_template = _split_template(
            _sse("message_start", {"type": "message_start", "message": start_message})
        )

        if delta_mode == "output":
            delta_usage = {"output_tokens": usage.get("output_tokens")}
        else:
            delta_usage = {k: usage.get(k) for k in _DELTA_FULL_FIELDS}
        # frames[0] is the templated message_start (None here); the rest are static.
        frames: list[bytes | None] = [
            None,
            _sse(
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            ),
            _PING + b": keepalive\n\n",
        ]
        frames.extend(
            _sse(
                "content_block_delta",
                {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": c}},
            )
            for c in chunks
        )
        frames.append(_sse("content_block_stop", {"type": "content_block_stop", "index": 0}))
        frames.append(
            _sse(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": delta_usage,
                },
            )
        )
        frames.append(_sse("message_stop", {"type": "message_stop"}))
        self.frames = frames
        # hang_after_start / stream_error cut after the first half (rounded up) of the deltas.
        self.head_frames = 3 + (len(chunks) + 1) // 2
        self.error_event = _stream_error_event("Overloaded")
        self.count_tokens_body = _dumps({"input_tokens": usage.get("input_tokens") or 0})


def _stream_error_event(message: str) -> bytes:
    return _sse("error", {"type": "error", "error": {"type": "overloaded_error", "message": message}})


def _models_body() -> bytes:
    data = [
        {
            "type": "model",
            "id": mid,
            "display_name": name,
            "created_at": created,
            "max_input_tokens": 200_000,
            "max_tokens": 64_000,
            "capabilities": {},
        }
        for mid, name, created in _MODELS
    ]
    return _dumps({"data": data, "first_id": data[0]["id"], "last_id": data[-1]["id"], "has_more": False})


def _decompress(body: bytes, encoding: str) -> bytes:
    """Decode a compressed body for parsing only; the recording keeps the wire bytes."""
    encoding = encoding.strip().lower()
    try:
        if encoding in ("gzip", "x-gzip"):
            return zlib.decompress(body, 16 + zlib.MAX_WBITS)
        if encoding == "deflate":
            return zlib.decompress(body)
    except zlib.error as exc:
        raise _BadRequest(f"cannot decode {encoding} body: {exc}") from None
    if encoding in ("", "identity"):
        return body
    raise _BadRequest(f"fake upstream cannot decode content-encoding {encoding!r}")


class FakeUpstream:
    """An Anthropic-compatible upstream on a background thread with its own event loop.

    Typical session-scoped fixture::

        @pytest.fixture(scope="session")
        def upstream():
            with FakeUpstream() as up:
                yield up

    ``record=False`` turns recording off for the benchmark; ``max_records`` bounds
    memory (oldest dropped first). ``requests`` is a snapshot list, safe to read from
    the test thread while the server thread keeps appending.
    """

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, record: bool = True, max_records: int = 10_000
    ) -> None:
        self.host = host
        self.port = port
        self.record = record
        self._records: deque[RecordedRequest] = deque(maxlen=max_records)
        self._lock = threading.Lock()
        self._tag = secrets.token_hex(4)
        self._counter = itertools.count(1)
        self._plans: dict[tuple[str | None, str | None, str | None], _Plan] = {}
        self._default_plan = _Plan(None, None, None)
        self._models_body = _models_body()
        self._json_headers = {"Content-Type": "application/json", **RATELIMIT_HEADERS}
        self._sse_headers = {
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache",
            **RATELIMIT_HEADERS,
        }
        self._request_count = 0
        self._aborted_streams = 0
        self._open_streams: set[asyncio.Task[Any]] = set()
        self._runner: web.ServerRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ public API

    @property
    def url(self) -> str:
        """Base URL to hand to a client or gateway (``http://127.0.0.1:PORT``, no trailing slash)."""
        if not self.port:
            raise RuntimeError("FakeUpstream is not listening yet; call start() first")
        return f"http://{self.host}:{self.port}"

    @property
    def requests(self) -> list[RecordedRequest]:
        """Snapshot of recorded requests, oldest first."""
        with self._lock:
            return list(self._records)

    @property
    def last_request(self) -> RecordedRequest:
        """The most recently recorded request (IndexError if none)."""
        with self._lock:
            return self._records[-1]

    @property
    def request_count(self) -> int:
        """Requests received since start or clear(), counted even with ``record=False``."""
        return self._request_count

    @property
    def aborted_streams(self) -> int:
        """Streams that ended early because the client went away (or the server stopped).

        Lets a test prove the gateway really closed its upstream connection when its
        own client aborted, instead of letting the upstream run to completion.
        """
        return self._aborted_streams

    def clear(self) -> None:
        """Forget recorded requests and reset the counters."""
        with self._lock:
            self._records.clear()
            self._request_count = 0
            self._aborted_streams = 0

    def start(self) -> FakeUpstream:
        """Start serving on a background thread; returns once the socket is listening."""
        if self._thread is not None:
            raise RuntimeError("FakeUpstream already started")
        ready = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(
            target=self._thread_main, args=(ready, failure), name="fake-upstream", daemon=True
        )
        self._thread.start()
        if not ready.wait(timeout=10):
            raise RuntimeError("FakeUpstream did not start within 10 s")
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]
        return self

    def stop(self) -> None:
        """Stop serving and join the thread; open streams are cut. Safe to call twice."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        with contextlib.suppress(RuntimeError):  # loop already closed
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        self._thread = None

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ lifecycle

    def _thread_main(self, ready: threading.Event, failure: list[BaseException]) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            try:
                loop.run_until_complete(self.serve())
            except BaseException as exc:
                failure.append(exc)
                return
            finally:
                ready.set()
            loop.run_forever()
            loop.run_until_complete(self.aclose())
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        finally:
            loop.close()
            self._loop = None

    async def serve(self) -> None:
        """Bind and start serving on the running loop (used by start() and by main())."""
        server = web.Server(
            self._handle,
            handler_cancellation=True,  # a client disconnect cancels the handler at once
            access_log=None,  # no per-request logging on the hot path
            auto_decompress=False,  # record wire bytes, not decompressed ones
        )
        runner = web.ServerRunner(server, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = runner.addresses[0][1]

    async def aclose(self) -> None:
        """Stop listening and cut open connections (counterpart of serve()).

        Open streams are cancelled first: aiohttp would otherwise wait its shutdown
        timeout for a ``hang_after_start`` or ``slow`` handler, making stop() slow.
        """
        for task in list(self._open_streams):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ------------------------------------------------------------------ request handling

    def _next_ids(self) -> tuple[bytes, str]:
        n = next(self._counter)
        suffix = f"{self._tag}{n:012x}"
        return f"msg_{suffix}".encode(), f"req_{suffix}"

    def _plan(self, headers: Any) -> _Plan:
        key = (headers.get("x-fake-usage"), headers.get("x-fake-chunks"), headers.get("x-fake-delta-usage"))
        if key == (None, None, None):
            return self._default_plan
        plan = self._plans.get(key)
        if plan is None:
            plan = _Plan(*key)
            if len(self._plans) >= 1024:
                self._plans.clear()
            self._plans[key] = plan
        return plan

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        self._request_count += 1
        body = await request.content.read()
        if self.record:
            decoded = [
                (k.decode("utf-8", "surrogateescape"), v.decode("utf-8", "surrogateescape"))
                for k, v in request.raw_headers
            ]
            rec = RecordedRequest(request.method, request.raw_path, decoded, body)
            with self._lock:
                self._records.append(rec)

        path = request.path
        method = request.method
        try:
            if path == "/v1/messages":
                if method != "POST":
                    return self._error(405, "invalid_request_error", f"Method {method} not allowed")
                return await self._messages(request, body)
            if path == "/v1/messages/count_tokens":
                if method != "POST":
                    return self._error(405, "invalid_request_error", f"Method {method} not allowed")
                scenario = request.headers.get("x-fake-scenario")
                if scenario is not None and scenario.startswith("error:"):
                    return self._scenario_error(request, scenario)
                return self._json(self._plan(request.headers).count_tokens_body)
            if path == "/v1/models":
                if method != "GET":
                    return self._error(405, "invalid_request_error", f"Method {method} not allowed")
                scenario = request.headers.get("x-fake-scenario")
                if scenario is not None and scenario.startswith("error:"):
                    return self._scenario_error(request, scenario)
                return self._json(self._models_body)
            return self._error(404, "not_found_error", f"Not found: {path}")
        except _BadRequest as exc:
            return self._error(400, "invalid_request_error", f"fake upstream: {exc}")

    async def _messages(self, request: web.BaseRequest, body: bytes) -> web.StreamResponse:
        headers = request.headers
        scenario = headers.get("x-fake-scenario", "ok")
        if scenario.startswith("error:"):
            return self._scenario_error(request, scenario)
        if scenario not in ("ok", "echo", "stream_error", "slow", "hang_after_start"):
            raise _BadRequest(f"unknown x-fake-scenario {scenario!r}")
        plan = self._plan(headers)
        encoding = headers.get("Content-Encoding")
        model, stream = _parse_head(_decompress(body, encoding) if encoding else body)
        model_json = _dumps(DEFAULT_MODEL if model is None else model)
        msg_id, req_id = self._next_ids()

        if not stream:
            head, middle, tail = plan.json_template
            out = b"".join((head, b'"', msg_id, b'"', middle, model_json, tail))
            return web.Response(body=out, headers={**self._json_headers, "request-id": req_id})

        head, middle, tail = plan.start_template
        start = b"".join((head, b'"', msg_id, b'"', middle, model_json, tail))
        frames = plan.frames
        delay = _delay_seconds(headers) if scenario in ("slow", "hang_after_start") else 0.0
        resp = web.StreamResponse(headers={**self._sse_headers, "request-id": req_id})
        task = asyncio.current_task()
        assert task is not None
        self._open_streams.add(task)
        try:
            await resp.prepare(request)
            write = resp.write
            await write(start)
            if scenario == "ok" or scenario == "echo":
                for i in range(1, len(frames)):
                    await write(frames[i])  # type: ignore[arg-type]
            elif scenario == "slow":
                half = delay / 2
                for i in range(1, len(frames)):
                    await asyncio.sleep(half)
                    await write(_PING)
                    await asyncio.sleep(half)
                    await write(frames[i])  # type: ignore[arg-type]
            else:
                cut = plan.head_frames
                for i in range(1, cut):
                    await write(frames[i])  # type: ignore[arg-type]
                if scenario == "stream_error":
                    custom = headers.get("x-fake-error-message")
                    await write(plan.error_event if custom is None else _stream_error_event(custom))
                else:  # hang_after_start: go silent, then finish normally
                    await asyncio.sleep(delay)
                    for i in range(cut, len(frames)):
                        await write(frames[i])  # type: ignore[arg-type]
            await resp.write_eof()
        except ConnectionResetError:
            self._aborted_streams += 1
        except asyncio.CancelledError:
            self._aborted_streams += 1
            raise
        finally:
            self._open_streams.discard(task)
        return resp

    def _json(self, body: bytes) -> web.Response:
        _, req_id = self._next_ids()
        return web.Response(body=body, headers={**self._json_headers, "request-id": req_id})

    def _error(
        self, status: int, err_type: str, message: str, extra: dict[str, str] | None = None
    ) -> web.Response:
        _, req_id = self._next_ids()
        body = _dumps(
            {"type": "error", "error": {"type": err_type, "message": message}, "request_id": req_id}
        )
        headers = {**self._json_headers, "request-id": req_id}
        if extra:
            headers.update(extra)
        return web.Response(status=status, body=body, headers=headers)

    def _scenario_error(self, request: web.BaseRequest, scenario: str) -> web.Response:
        parts = scenario.split(":", 2)
        try:
            status = int(parts[1])
        except ValueError:
            raise _BadRequest(f"bad error scenario {scenario!r}; want error:<status>[:<type>]") from None
        if not 400 <= status <= 599:
            raise _BadRequest(f"error scenario status must be 4xx/5xx, got {status}")
        err_type = parts[2] if len(parts) > 2 and parts[2] else _ERROR_TYPES.get(status, "api_error")
        headers = request.headers
        message = headers.get("x-fake-error-message") or _ERROR_MESSAGES.get(
            err_type, f"fake upstream {err_type}"
        )
        retry_after = headers.get("x-fake-retry-after")
        extra = {"retry-after": retry_after} if retry_after is not None else None
        return self._error(status, err_type, message, extra)


def _delay_seconds(headers: Any) -> float:
    raw = headers.get("x-fake-delay-ms")
    if raw is None:
        return DEFAULT_DELAY_MS / 1000
    try:
        value = float(raw)
    except ValueError:
        raise _BadRequest("x-fake-delay-ms must be a number") from None
    if value < 0:
        raise _BadRequest("x-fake-delay-ms must be >= 0")
    return value / 1000


def parse_sse(data: bytes) -> tuple[list[tuple[str, Any]], list[str]]:
    """Parse a complete SSE byte stream into ``([(event, data_json)], [comment_lines])``.

    A small strict parser for tests: it keeps comment lines (which generic SSE
    clients drop) because forwarding them is part of what a gateway must do.
    """
    events: list[tuple[str, Any]] = []
    comments: list[str] = []
    for block in data.replace(b"\r\n", b"\n").split(b"\n\n"):
        if not block.strip():
            continue
        name = "message"
        payload: list[str] = []
        for line in block.decode().split("\n"):
            if line.startswith(":"):
                comments.append(line[1:].strip())
            elif line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                payload.append(line[5:].removeprefix(" "))
        if payload:
            events.append((name, json.loads("\n".join(payload))))
    return events, comments


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    return uvloop.new_event_loop


async def _serve_forever(upstream: FakeUpstream) -> None:
    await upstream.serve()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    print(f"fake upstream listening on {upstream.url} (record={upstream.record})", flush=True)
    try:
        await stop.wait()
    finally:
        await upstream.aclose()


def main(argv: list[str] | None = None) -> None:
    """Run in the foreground: ``python -m tests.support.fake_upstream --port 9100 [--no-record]``.

    Uses uvloop when importable so the benchmark's upstream adds as little as possible.
    Prints one ``listening on`` line once the socket is bound, so a benchmark can wait for it.
    """
    parser = argparse.ArgumentParser(description="Fake Anthropic Messages API upstream")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--no-record", action="store_true", help="do not keep received requests")
    args = parser.parse_args(argv)
    upstream = FakeUpstream(host=args.host, port=args.port, record=not args.no_record)
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(_serve_forever(upstream))


if __name__ == "__main__":
    main()
