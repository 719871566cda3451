"""The body head: the few fields admission prices, read in one pass without re-serialising the body."""

from __future__ import annotations

import json

from ccledger.gateway.body import parse_head


def _head(**fields):  # type: ignore[no-untyped-def]
    return parse_head(json.dumps({"messages": [{"role": "user", "content": "hi"}], **fields}).encode())


def test_model_limits_geo_and_speed():
    h = _head(model="claude-opus-5", max_tokens=321, stream=True, speed="fast", inference_geo="us")
    assert (h.model, h.max_tokens, h.stream, h.speed, h.inference_geo) == (
        "claude-opus-5",
        321,
        True,
        "fast",
        "us",
    )
    assert h.web_search() == (0, False)


def test_web_search_max_uses():
    tools = [
        {"name": "Bash", "description": "run", "input_schema": {"type": "object", "properties": {}}},
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 8, "allowed_domains": ["a.b"]},
        {"type": "web_fetch_20250910", "name": "web_fetch", "max_uses": 3},  # not a search: no fee
    ]
    assert _head(model="m", tools=tools).web_search() == (8, False)
    tools.append({"type": "web_search_20260209", "name": "web_search2", "max_uses": 2})
    assert _head(model="m", tools=tools).web_search() == (10, False)
    for bad in (None, 0, -1, "5", True, 2.5):
        t = [{"type": "web_search_20260209", "name": "web_search", "max_uses": bad}]
        assert _head(model="m", tools=t).web_search() == (0, True), bad
    assert _head(model="m", tools=[{"type": "web_search_20260209", "max_uses": 4.0}]).web_search() == (
        4,
        False,
    )


def test_odd_bodies_never_raise():
    assert parse_head(b"not json").model is None
    odd_tools = parse_head(b'{"model":"m","max_tokens":5,"tools":["not an object"]}')
    assert (odd_tools.model, odd_tools.max_tokens, odd_tools.tools) == ("m", 5, None)
    assert parse_head(b'{"model": 5}').model is None
