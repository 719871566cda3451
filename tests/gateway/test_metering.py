"""Metering: exact costs from usage, attribution, stream shapes, aborts and mid-stream errors."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from ccledger.core.periods import utc_period_key
from ccledger.sources.anthropic_usage import StreamMeter, parse_message_json
from tests.gateway.conftest import DEFAULT_COST, TEST_MODEL, body, expected_nanos
from tests.support.fake_upstream import FakeUpstream

ATTR = {
    "x-claude-code-session-id": "sess-42",
    "x-claude-code-agent-id": "agent-9",
    "x-claude-code-parent-agent-id": "agent-1",
    "user-agent": "claude-cli/2.1.239 (external, cli)",
}


def test_record_attribution_and_exact_cost(gw):
    key = gw.user("alice", groups=("backend", "platform"))
    with gw.client(key) as c:
        r = c.post("/v1/messages", content=body(), headers=ATTR)
    msg_id = r.json()["id"]
    (row,) = gw.rows()
    assert row["cost_nanos"] == DEFAULT_COST
    assert row["dedupe_key"] == "msg:" + msg_id  # keyed as the transcript reader keys the same request
    assert row["parent_agent_id"] == "agent-1"
    assert json.loads(row["extra"]) == {"group_ids": "backend,platform"}
    assert row["request_id"] == r.headers["request-id"]
    assert row["source"] == "gateway"
    assert row["model"] == TEST_MODEL
    assert row["user_id"] == "alice"
    assert row["group_id"] == "backend"  # first group; all of them in extra
    assert row["key_id"] == gw.identity.list_keys("alice")[0]["id"]
    assert row["session_id"] == "sess-42"
    assert row["agent_id"] == "agent-9"
    assert row["client_version"] == "2.1.239"
    assert row["duration_ms"] is not None and row["duration_ms"] >= 0
    assert (row["input_tokens"], row["output_tokens"]) == (21, 57)
    assert (row["cache_write_5m"], row["cache_write_1h"], row["cache_read"]) == (200, 100, 4000)


@pytest.mark.parametrize("delta", ["full", "output"])
def test_stream_cost_matches_for_both_delta_shapes(gw, delta):
    key = gw.user("alice")
    with gw.client(key) as c:
        r = c.post("/v1/messages", content=body(stream=True), headers={"x-fake-delta-usage": delta})
    assert r.status_code == 200
    (row,) = gw.rows()
    assert row["cost_nanos"] == DEFAULT_COST
    assert row["dedupe_key"].startswith("msg:msg_")


def test_old_usage_without_split_is_all_5m_and_web_search_priced(gw):
    key = gw.user("alice")
    usage = {
        "input_tokens": 10, "output_tokens": 20, "cache_creation_input_tokens": 500,
        "cache_creation": None, "cache_read_input_tokens": 0, "server_tool_use": {"web_search_requests": 3},
    }  # fmt: skip
    with gw.client(key) as c:
        c.post("/v1/messages", content=body(), headers={"x-fake-usage": json.dumps(usage)})
    (row,) = gw.rows()
    assert (row["cache_write_5m"], row["cache_write_1h"]) == (500, 0)
    assert row["web_search_requests"] == 3
    assert row["cost_nanos"] == expected_nanos(input=10, output=20, w5=500, searches=3)


def test_counts_an_upstream_got_wrong_are_clamped_and_flagged_not_a_poisoned_batch(gw):
    """A negative count, or one beyond the store's integers, must not fail the batch it is written in
    (and every spool replay after it): the row is stored with its counts brought into range, flagged,
    and the requests beside it are stored as usual."""
    key = gw.user("alice")
    usage = {"input_tokens": 2**64 - 1, "output_tokens": -5, "cache_creation_input_tokens": 0,
             "cache_read_input_tokens": 0, "server_tool_use": {"web_search_requests": 10**13}}
    with gw.client(key) as c:
        c.post("/v1/messages", content=body(), headers={"x-fake-usage": json.dumps(usage)})
        c.post("/v1/messages", content=body())
    rows = sorted(gw.rows(), key=lambda r: r["input_tokens"])
    assert len(rows) == 2 and gw.state.writer.spooled == 0
    normal, wrong = rows
    assert normal["cost_nanos"] == DEFAULT_COST and normal["extra"] is None
    # Into range: at most 10**9 tokens of a kind and 10**6 searches, the ledger's stated limits.
    assert (wrong["input_tokens"], wrong["output_tokens"], wrong["web_search_requests"]) == (10**9, 0, 10**6)
    assert json.loads(wrong["extra"]) == {"usage_out_of_range": "1"}
    assert wrong["cost_nanos"] == expected_nanos(input=10**9, searches=10**6)


def test_mid_stream_error_costs_nothing_and_releases(gw):
    key = gw.user("alice")
    with gw.client(key) as c:
        r = c.post("/v1/messages", content=body(stream=True), headers={"x-fake-scenario": "stream_error"})
    assert r.status_code == 200
    assert b"event: error" in r.content and b"overloaded_error" in r.content
    assert gw.rows() == []
    now = gw.clock()
    state = gw.run(gw.state.counters.read("user:alice", utc_period_key("daily", now), now))
    assert state.reserved_nanos == 0 and state.spent_nanos == 0


def test_aborted_stream_is_billed_with_floor(gw, fake_upstream: FakeUpstream):
    key = gw.user("alice")
    chunks = json.dumps(["x" * 400] * 4)  # 2 deltas (800 chars) are sent before the stall
    before = fake_upstream.aborted_streams
    headers = {
        "x-api-key": key, "x-fake-scenario": "hang_after_start", "x-fake-delay-ms": "5000",
        "x-fake-chunks": chunks, "x-fake-usage": json.dumps({"output_tokens": 1}),
    }  # fmt: skip
    with (
        httpx.Client(base_url=gw.url, timeout=10) as c,
        c.stream("POST", "/v1/messages", content=body(stream=True), headers=headers) as r,
    ):
        got = b""
        for chunk in r.iter_raw():
            got += chunk
            if got.count(b"x" * 400 + b'"}}') >= 2:  # two complete text deltas received
                break
    # The client hung up mid-stream; the gateway must bill and cut the upstream.
    deadline = time.monotonic() + 5
    rows = []
    while not rows and time.monotonic() < deadline:
        time.sleep(0.05)
        rows = gw.rows()
    (row,) = rows
    assert row["output_tokens"] == 200  # ceil(800 chars / 4), above the 1 token message_start reported
    assert row["cost_nanos"] == expected_nanos(input=21, output=200, w5=200, w1=100, read=4000)
    while fake_upstream.aborted_streams == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fake_upstream.aborted_streams > before


def test_duplicate_write_is_not_double_counted(gw):
    key = gw.user("alice")
    with gw.client(key) as c:
        c.post("/v1/messages", content=body())
    (row,) = gw.rows()
    # Writing the same record again (a retry, a spool replay) upserts the same row.
    from ccledger.gateway.writer import row_from_json, row_to_json

    again = row_from_json(row_to_json(gw.state.writer.ledger and _priced(row)))
    gw.state.ledger.write([again])
    assert gw.state.ledger.count() == 1
    assert gw.rows()[0]["cost_nanos"] == DEFAULT_COST


def _priced(row):
    from datetime import UTC, datetime

    from ccledger.core.records import TokenCounts, UsageRecord
    from ccledger.store.ledger import PricedRow

    rec = UsageRecord(
        ts=datetime.fromtimestamp(row["ts_ms"] / 1000, UTC), source="gateway", dedupe_key=row["dedupe_key"],
        model=row["model"], user_id=row["user_id"], cost_nanos=row["cost_nanos"],
        tokens=TokenCounts(row["input_tokens"], row["output_tokens"], row["cache_write_5m"],
                           row["cache_write_1h"], row["cache_read"]),
    )  # fmt: skip
    return PricedRow(rec, row["model"], False)


# -- the pure parser ---------------------------------------------------------------------------------

SSE = (
    b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1","model":"m",'
    b'"usage":{"input_tokens":5,"output_tokens":1,"cache_creation_input_tokens":30,'
    b'"cache_read_input_tokens":7,"cache_creation":{"ephemeral_5m_input_tokens":10,'
    b'"ephemeral_1h_input_tokens":20}}}}\n\n'
    b": comment\n\n"
    b'event: ping\ndata: {"type":"ping"}\n\n'
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
    b'"delta":{"type":"text_delta","text":"hello world"}}\n\n'
    b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},'
    b'"usage":{"output_tokens":3}}\n\n'
    b'event: message_delta\ndata: {"type":"message_delta","delta":{},'
    b'"usage":{"output_tokens":9,"input_tokens":null,"cache_read_input_tokens":8}}\n\n'
    b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
)


def test_stream_meter_any_chunk_boundary():
    for step in (1, 2, 3, 7, 64, len(SSE)):
        meter = StreamMeter()
        for i in range(0, len(SSE), step):
            meter.feed(SSE[i : i + step])
        u = meter.usage()
        assert u is not None
        t = u.tokens
        # message_start overwritten by the LAST delta's non-null fields; split from message_start.
        assert (t.input, t.output, t.cache_write_5m, t.cache_write_1h, t.cache_read) == (5, 9, 10, 20, 8)
        assert meter.message_id == "msg_1" and meter.finished and meter.chars == 11


def test_stream_meter_abort_floor_and_json():
    meter = StreamMeter()
    meter.feed(SSE.split(b"event: message_delta")[0])
    u = meter.usage(aborted=True)
    assert u is not None and u.tokens.output == 3  # ceil(11 / 4)
    parsed = parse_message_json(b'{"id":"msg_2","model":"m","usage":{"input_tokens":1,"output_tokens":2}}')
    assert parsed.message_id == "msg_2" and parsed.usage.tokens.output == 2
    assert parse_message_json(b"not json").usage is None


def test_cache_write_split_is_the_shared_rule():
    """The gateway prices a usage block exactly as the transcript reader does: one rule,
    ``core.records.split_cache_writes`` (the reported 1h part is kept; the 5m part is what the total has
    beyond it, never below the reported 5m)."""
    from ccledger.core.records import split_cache_writes

    def split(total, w5, w1):  # type: ignore[no-untyped-def]
        usage: dict = {"input_tokens": 1, "output_tokens": 1, "cache_creation_input_tokens": total}
        if w5 is not None or w1 is not None:
            usage["cache_creation"] = {"ephemeral_5m_input_tokens": w5, "ephemeral_1h_input_tokens": w1}
        t = parse_message_json(json.dumps({"id": "m", "usage": usage}).encode()).usage.tokens
        return t.cache_write_5m, t.cache_write_1h

    assert split(100, 0, 150) == (0, 150) == split_cache_writes(100, 0, 150)
    for case in [
        (300, 200, 100),
        (100, None, None),
        (None, 40, 60),
        (50, 80, 0),
        (10, 0, None),
        (0, None, 7),
    ]:
        assert split(*case) == split_cache_writes(*case), case


def test_client_version_is_clamped_to_the_column():
    from ccledger.gateway.headers import client_version

    assert client_version("claude-cli/2.1.239 (external, cli)") == "2.1.239"
    huge = client_version("claude-cli/1" + "2" * 100_000 + " (external, cli)")
    assert huge == "1" + "2" * 63
    assert len(client_version("x" * 500)) == 64


def test_aborted_stream_does_not_teach_the_estimator(gw, fake_upstream: FakeUpstream):
    """Only normally completed requests feed the expected estimator: an aborted stream is billed a floor,
    which as the session's next guess would be low (and low guesses loosen its bound)."""
    key = gw.user("alice")
    session = {"x-claude-code-session-id": "sess-abort"}
    headers = {
        "x-api-key": key, "x-fake-scenario": "hang_after_start", "x-fake-delay-ms": "5000",
        "x-fake-chunks": json.dumps(["x" * 400] * 4), **session,
    }  # fmt: skip
    with (
        httpx.Client(base_url=gw.url, timeout=10) as c,
        c.stream("POST", "/v1/messages", content=body(stream=True), headers=headers) as r,
    ):
        got = b""
        for chunk in r.iter_raw():
            got += chunk
            if got.count(b"x" * 400 + b'"}}') >= 2:
                break
    deadline = time.monotonic() + 5
    while not gw.rows() and time.monotonic() < deadline:
        time.sleep(0.05)
    (row,) = gw.rows()
    assert json.loads(row["extra"]).get("aborted") == "1"
    est = gw.state.limits.estimator
    assert est._sessions.get(("alice", "sess-abort")) is None and est._users.get(("", "alice")) is None
    # A request that completes does teach it.
    with gw.client(key) as c:
        assert c.post("/v1/messages", content=body(stream=True), headers=session).status_code == 200
    assert est._sessions.get(("alice", "sess-abort")) == DEFAULT_COST
