"""Usage from Anthropic Messages API responses: a JSON body or an SSE stream.

Pure (no I/O) so the gateway's relay path and the tests share one implementation. The stream parser is
incremental and works on arbitrary chunk boundaries: it keeps only the current partial line and the few
numbers metering needs, never the stream itself, because it runs on every relayed chunk.

Metering rule (gateway-protocol.md §5): start from ``message_start.usage`` (the only place with the cache
write 5m/1h split), then overwrite with the non-null fields of the *last* ``message_delta.usage`` (counts
are cumulative, never summed).
"""


import math

import msgspec

from ccledger.core.records import TokenCounts, split_cache_writes

# -- wire shapes: only the fields metering reads; msgspec skips everything else without building it ----


class _CacheCreation(msgspec.Struct):
    ephemeral_5m_input_tokens: int | None = None
    ephemeral_1h_input_tokens: int | None = None


class _ServerToolUse(msgspec.Struct):
    web_search_requests: int | None = None


class WireUsage(msgspec.Struct):
    """The API's usage object, as both the gateway (responses) and transcripts (lines) carry it."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    cache_creation: _CacheCreation | None = None
    server_tool_use: _ServerToolUse | None = None
    service_tier: str | None = None
    inference_geo: str | None = None
    speed: str | None = None


class WireMessage(msgspec.Struct):
    id: str | None = None
    model: str | None = None
    usage: WireUsage | None = None


class _Delta(msgspec.Struct):
    text: str | None = None
    thinking: str | None = None
    partial_json: str | None = None


class _ErrorBody(msgspec.Struct):
    type: str | None = None
    message: str | None = None


class _Event(msgspec.Struct):
    type: str = ""
    message: WireMessage | None = None
    usage: WireUsage | None = None
    delta: _Delta | None = None
    error: _ErrorBody | None = None


class _DeltaEvent(msgspec.Struct):
    delta: _Delta | None = None


_message_decoder = msgspec.json.Decoder(WireMessage)
_event_decoder = msgspec.json.Decoder(_Event)
_delta_decoder = msgspec.json.Decoder(_DeltaEvent)


class Usage(msgspec.Struct):
    """What one response reported, in the ledger's token kinds plus the pricing modifiers."""

    tokens: TokenCounts
    web_search_requests: int = 0
    service_tier: str | None = None
    inference_geo: str | None = None
    speed: str | None = None


def usage_from_wire(u: WireUsage) -> Usage:
    """The ledger's view of a wire usage block: one rule for every source (cache split included).
    Its objects are built with positional arguments: this runs once per request of every transcript."""
    cc = u.cache_creation
    w5, w1 = split_cache_writes(
        u.cache_creation_input_tokens,
        cc.ephemeral_5m_input_tokens if cc is not None else None,
        cc.ephemeral_1h_input_tokens if cc is not None else None,
    )
    stu = u.server_tool_use
    return Usage(
        TokenCounts(u.input_tokens or 0, u.output_tokens or 0, w5, w1, u.cache_read_input_tokens or 0),
        (stu.web_search_requests or 0) if stu is not None else 0,
        u.service_tier,
        u.inference_geo,
        u.speed,
    )


class ParsedMessage(msgspec.Struct):
    message_id: str | None
    model: str | None
    usage: Usage | None


def parse_message_json(body: bytes) -> ParsedMessage:
    """Usage, id and model from a non-streaming Messages response. Never raises on odd bodies."""
    try:
        m = _message_decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return ParsedMessage(None, None, None)
    return ParsedMessage(m.id, m.model, usage_from_wire(m.usage) if m.usage is not None else None)


def merge_delta(start: WireUsage | None, delta: WireUsage | None) -> WireUsage | None:
    """``message_start`` usage overwritten by the non-null fields of the last ``message_delta`` usage."""
    if start is None:
        return delta
    if delta is None:
        return start
    merged = msgspec.structs.replace(start)
    for name in (
        "input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens",
        "server_tool_use", "service_tier", "inference_geo", "speed",
    ):  # fmt: skip
        value = getattr(delta, name)
        if value is not None:
            setattr(merged, name, value)
    return merged


class StreamMeter:
    """Incremental SSE reader: feed it the relayed chunks; ask it for usage at any moment.

    Keeps the partial line, the ``message_start`` usage, the last ``message_delta`` usage and a count of
    delta characters already relayed (the abort floor: ~4 characters per output token, spend-limits §A6).
    Only ``data:`` lines are decoded, and for the frequent ``content_block_delta`` lines only the delta.
    """

    __slots__ = (
        "_buf", "_delta_usage", "_start_usage", "chars", "error_type", "finished", "message_id", "model",
    )  # fmt: skip

    def __init__(self) -> None:
        self._buf = b""
        self._start_usage: WireUsage | None = None
        self._delta_usage: WireUsage | None = None
        self.message_id: str | None = None
        self.model: str | None = None
        self.chars = 0
        self.error_type: str | None = None
        self.finished = False  # message_stop seen

    def feed(self, chunk: bytes) -> None:
        end = chunk.rfind(b"\n")
        if end < 0:
            self._buf += chunk
            return
        data = self._buf + chunk[: end + 1] if self._buf else chunk[: end + 1]
        self._buf = chunk[end + 1 :]
        for line in data.split(b"\n"):
            if line.startswith(b"data:"):
                self._line(line[5:])

    def _line(self, payload: bytes) -> None:
        # Cheap pre-dispatch on the type string: deltas are most of the stream.
        if b'"content_block_delta"' in payload[:48]:
            try:
                ev = _delta_decoder.decode(payload)
            except (msgspec.DecodeError, msgspec.ValidationError):
                return
            d = ev.delta
            if d is not None:
                self.chars += len(d.text or "") + len(d.thinking or "") + len(d.partial_json or "")
            return
        if b'"ping"' in payload and b'"message' not in payload:
            return
        try:
            ev = _event_decoder.decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return
        if ev.type == "message_start" and ev.message is not None:
            self.message_id = ev.message.id
            self.model = ev.message.model
            self._start_usage = ev.message.usage
        elif ev.type == "message_delta":
            if ev.usage is not None:
                self._delta_usage = ev.usage
        elif ev.type == "content_block_delta" and ev.delta is not None:
            d = ev.delta
            self.chars += len(d.text or "") + len(d.thinking or "") + len(d.partial_json or "")
        elif ev.type == "message_stop":
            self.finished = True
        elif ev.type == "error":
            self.error_type = (ev.error.type if ev.error else None) or "error"

    @property
    def saw_final_usage(self) -> bool:
        return self._delta_usage is not None

    def usage(self, *, aborted: bool = False) -> Usage | None:
        """The usage to bill. When the stream was cut before the final ``message_delta``, output is at
        least ceil(chars relayed / 4), so aborting a stream never dodges a cap."""
        merged = merge_delta(self._start_usage, self._delta_usage)
        if merged is None:
            return None
        u = usage_from_wire(merged)
        if aborted or self._delta_usage is None:
            floor = math.ceil(self.chars / 4)
            if floor > u.tokens.output:
                t = u.tokens
                u.tokens = TokenCounts(t.input, floor, t.cache_write_5m, t.cache_write_1h, t.cache_read)
        return u


def parse_sse_usage(data: bytes) -> tuple[ParsedMessage, StreamMeter]:
    """Convenience for tests and transcripts: meter a complete stream in one call."""
    meter = StreamMeter()
    meter.feed(data)
    meter.feed(b"\n")
    return ParsedMessage(meter.message_id, meter.model, meter.usage()), meter
