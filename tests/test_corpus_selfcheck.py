"""Self-checks of the transcript corpus generator (tests/support/corpus.py), not of ccledger.

Why: every reader/ledger/report test trusts ``Expected``; if the generator's bookkeeping drifted from
what it writes, those tests would be checking against wrong numbers. So the files are read back here by
a deliberately naive reader that follows the documented rules, and must agree with ``Expected``
exactly; the hand-check cases must equal the numbers written in their docstring.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.support.corpus import (
    HANDCHECK_COSTS,
    HANDCHECK_SESSION_A,
    HANDCHECK_SESSION_B,
    HANDCHECK_TOTAL,
    Expected,
    ExpectedRequest,
    generate,
    handcheck_cases,
    project_dir_name,
)
from tests.support.refprices import is_long_context, normalize_model, request_cost

Json = dict[str, Any]


@dataclass
class ReadBack:
    """What the naive reader found."""

    requests: dict[str, ExpectedRequest] = field(default_factory=dict)
    bad_lines: int = 0
    lines_added: dict[str, int] = field(default_factory=dict)
    lines_removed: dict[str, int] = field(default_factory=dict)
    pending_tails: int = 0  # incomplete last lines (being written)
    complete_tails: int = 0  # complete last lines without newline
    old_style_usage_lines: int = 0
    copies: int = 0  # assistant lines whose exact key was already seen (resume copies, streaming)


def _ts(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00")).astimezone(UTC)


def read_back(root: Path) -> ReadBack:
    """Read every transcript under ``root/projects`` with the rules stated in corpus.py's docstring."""
    out = ReadBack()
    best: dict[str, tuple[int, Json]] = {}
    times: dict[tuple[str, str | None], set[str]] = {}
    for path in sorted((root / "projects").rglob("*.jsonl")):
        data = path.read_bytes()
        *lines, tail = data.split(b"\n")
        entries = [(raw, True) for raw in lines]
        if tail:
            entries.append((tail, False))
        for raw, terminated in entries:
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                if terminated:
                    out.bad_lines += 1
                else:
                    out.pending_tails += 1
                continue
            if not terminated:
                out.complete_tails += 1
            assert isinstance(obj, dict)
            if obj.get("type") == "user":
                patch = (obj.get("toolUseResult") or {}).get("structuredPatch") or []
                sid = obj["sessionId"]
                for hunk in patch:
                    for line in hunk["lines"]:
                        if line.startswith("+"):
                            out.lines_added[sid] = out.lines_added.get(sid, 0) + 1
                        elif line.startswith("-"):
                            out.lines_removed[sid] = out.lines_removed.get(sid, 0) + 1
                continue
            if obj.get("type") != "assistant":
                continue
            msg = obj.get("message") or {}
            if obj.get("isApiErrorMessage") or msg.get("model") == "<synthetic>":
                continue
            if "timestamp" not in obj or "id" not in msg or not isinstance(msg.get("usage"), dict):
                out.bad_lines += 1
                continue
            u = msg["usage"]
            if "cache_creation" not in u:
                out.old_style_usage_lines += 1
            key = (msg["id"], obj.get("requestId"))
            times.setdefault(key, set()).add(obj["timestamp"])
            score = sum(u.get(k, 0) for k in ("input_tokens", "output_tokens", "cache_read_input_tokens"))
            score += u.get("cache_creation_input_tokens", 0)
            prev = best.get(msg["id"])
            if prev is None or score > prev[0]:  # ties keep the first line (the /btw parent)
                best[msg["id"]] = (score, obj)
            else:
                out.copies += 1
    for key, ts in times.items():
        assert len(ts) == 1, f"lines of {key} carry different timestamps"
    for mid, (_, obj) in best.items():
        msg, u = obj["message"], obj["message"]["usage"]
        split = u.get("cache_creation")
        cw5 = split["ephemeral_5m_input_tokens"] if split else u.get("cache_creation_input_tokens", 0)
        cw1h = split["ephemeral_1h_input_tokens"] if split else 0
        web = (u.get("server_tool_use") or {}).get("web_search_requests", 0)
        cost, unknown = request_cost(
            msg["model"],
            input_tokens=u["input_tokens"],
            output_tokens=u["output_tokens"],
            cache_write_5m=cw5,
            cache_write_1h=cw1h,
            cache_read=u.get("cache_read_input_tokens", 0),
            web_search_requests=web,
            service_tier=u.get("service_tier"),
            inference_geo=u.get("inference_geo"),
        )
        out.requests[mid] = ExpectedRequest(
            timestamp=_ts(obj["timestamp"]),
            session_id=obj["sessionId"],
            project=obj["cwd"],
            model=msg["model"],
            input_tokens=u["input_tokens"],
            output_tokens=u["output_tokens"],
            cache_write_5m=cw5,
            cache_write_1h=cw1h,
            cache_read=u.get("cache_read_input_tokens", 0),
            web_search_requests=web,
            is_sidechain=obj.get("isSidechain", False),
            cost=cost,
            unknown_model=unknown,
            message_id=mid,
            request_id=obj.get("requestId"),
            service_tier=u.get("service_tier"),
            inference_geo=u.get("inference_geo"),
        )
    return out


def assert_read_back_matches(root: Path, exp: Expected) -> ReadBack:
    got = read_back(root)
    want = {r.message_id: r for r in exp.requests}
    assert len(want) == len(exp.requests), "duplicate message ids in Expected"
    assert set(got.requests) == set(want)
    for mid, r in want.items():
        assert got.requests[mid] == r, mid
    assert got.bad_lines == exp.bad_lines == sum(exp.bad_by_kind.values())
    assert got.lines_added == exp.lines_added
    assert got.lines_removed == exp.lines_removed
    assert sorted(p.resolve() for p in (root / "projects").rglob("*.jsonl")) == sorted(
        p.resolve() for p in exp.files
    )
    assert sum(p.stat().st_size for p in exp.files) == exp.bytes_written
    return got


# ---- hand-check cases --------------------------------------------------------------------------------


def test_handcheck_costs_equal_the_documented_arithmetic(tmp_path: Path) -> None:
    exp = handcheck_cases(tmp_path)
    assert [r.cost for r in exp.requests] == list(HANDCHECK_COSTS.values())
    assert exp.total_cost() == HANDCHECK_TOTAL == Decimal("34.756036")
    assert sum(HANDCHECK_COSTS.values()) == HANDCHECK_TOTAL
    labels = dict(zip(HANDCHECK_COSTS, exp.requests, strict=True))
    assert labels["A1"].cost == Decimal(3)  # 1,000,000 input of claude-sonnet-4-6 = $3
    assert labels["A8"].unknown_model and sum(r.unknown_model for r in exp.requests) == 1
    assert [k for k, r in labels.items() if r.is_sidechain] == ["A12"]
    assert labels["A12"].session_id == HANDCHECK_SESSION_A
    assert {r.session_id for k, r in labels.items() if k.startswith("B")} == {HANDCHECK_SESSION_B}
    assert exp.bad_lines == 2
    assert exp.lines_added == {HANDCHECK_SESSION_A: 3}
    assert exp.lines_removed == {HANDCHECK_SESSION_A: 1}
    assert exp.totals()["web_search_requests"] == 5
    got = assert_read_back_matches(tmp_path, exp)
    assert got.pending_tails == 1  # session A's last line is being written
    assert got.complete_tails == 1  # session B's last line has no newline but counts


def test_refprices_spot_checks() -> None:
    assert normalize_model("us.anthropic.claude-sonnet-4-5-20250929-v1:0") == "claude-sonnet-4-5"
    assert normalize_model("claude-opus-4-5@20251101") == "claude-opus-4-5"
    assert normalize_model("anthropic.claude-opus-4-6-v1") == "claude-opus-4-6"
    assert normalize_model("claude-sonnet-4-20250514") == "claude-sonnet-4"
    # exactly 200,000 is standard; 200,001 is long context (Sonnet 4/4.5 only)
    assert not is_long_context("claude-sonnet-4-5", 200_000, 0, 0)
    assert is_long_context("claude-sonnet-4-5", 200_001, 0, 0)
    assert not is_long_context("claude-sonnet-4-6", 900_000, 0, 0)
    assert request_cost("claude-sonnet-4-5", input_tokens=200_001, output_tokens=0)[0] == Decimal("1.200006")
    assert request_cost("claude-future-9", input_tokens=0, output_tokens=0, cache_read=1_000_000) == (
        Decimal("0.5"),
        True,
    )
    # geo premium only on 4.6+; batch halves cache writes too
    assert (
        request_cost("claude-opus-4-5", input_tokens=1_000_000, output_tokens=0, inference_geo="us")[0] == 5
    )
    cost = request_cost(
        "claude-haiku-4-5", input_tokens=0, output_tokens=0, cache_write_1h=1_000_000, service_tier="batch"
    )
    assert cost[0] == 1


# ---- generated corpora ---------------------------------------------------------------------------------


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.jsonl"))}


def test_generate_is_deterministic(tmp_path: Path) -> None:
    kw: dict[str, Any] = {"sessions": 9, "requests_per_session": 5}
    a = generate(tmp_path / "a", seed=7, **kw)
    b = generate(tmp_path / "b", seed=7, **kw)
    c = generate(tmp_path / "c", seed=8, **kw)
    assert _snapshot(tmp_path / "a") == _snapshot(tmp_path / "b")
    assert a.requests == b.requests and a.bad_lines == b.bad_lines and a.lines_added == b.lines_added
    assert _snapshot(tmp_path / "a") != _snapshot(tmp_path / "c")
    assert a.total_cost() != c.total_cost()


@pytest.fixture(scope="module")
def features_corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Expected]:
    root = tmp_path_factory.mktemp("features")
    return root, generate(root, seed=3, sessions=10, requests_per_session=20)


def test_features_corpus_reads_back_exactly(features_corpus: tuple[Path, Expected]) -> None:
    root, exp = features_corpus
    got = assert_read_back_matches(root, exp)
    assert got.pending_tails == 1  # fragment_end
    assert got.complete_tails == 1  # the resumed file's last line
    assert got.old_style_usage_lines > 0
    assert got.copies > len(exp.requests) // 4  # streaming + resume copies + /btw replays


def test_features_corpus_covers_the_cases(features_corpus: tuple[Path, Expected]) -> None:
    _, exp = features_corpus
    reqs = exp.requests
    assert set(exp.bad_by_kind) == {
        "garbage",
        "nul",
        "truncated",
        "invalid_utf8",
        "invalid_utf8_assistant",
        "missing_timestamp",
        "missing_id",
    }
    models = {r.model for r in reqs}
    for m in (
        "claude-sonnet-4-5-20250929",
        "claude-sonnet-4-5",
        "claude-opus-4-6",
        "claude-haiku-4-5-20251001",
        "claude-opus-4-8",
        "claude-sonnet-5",
        "claude-opus-5",
        "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
        "claude-opus-4-5@20251101",
        "claude-future-9",
        "claude-sonnet-4-20250514",
    ):
        assert m in models, m
    assert any(r.unknown_model for r in reqs)
    assert any(r.is_sidechain for r in reqs)
    assert any(r.web_search_requests for r in reqs)
    assert any(r.service_tier == "batch" for r in reqs)
    assert any(r.inference_geo == "us" for r in reqs)
    assert any(r.request_id is None for r in reqs)
    assert any(r.cache_write_1h and r.cache_write_5m for r in reqs)

    def input_side(r: ExpectedRequest) -> int:
        return r.input_tokens + r.cache_write_5m + r.cache_write_1h + r.cache_read

    long_ctx = [
        r
        for r in reqs
        if is_long_context(r.model, r.input_tokens, r.cache_write_5m + r.cache_write_1h, r.cache_read)
    ]
    assert long_ctx and all(r.timestamp < datetime(2026, 3, 28, tzinfo=UTC) for r in long_ctx)
    assert any(input_side(r) == 200_000 for r in reqs)  # the boundary, at standard price
    big_1m = {normalize_model(r.model) for r in reqs if input_side(r) > 200_000 and r not in long_ctx}
    assert big_1m and "claude-opus-4-6" not in big_1m  # 1M-window models at standard price, never Opus 4.6
    # peers split any single field above 200k (bench/README.md): keep every field at or below it
    assert all(max(r.input_tokens, r.cache_write_5m, r.cache_write_1h, r.cache_read) <= 200_000 for r in reqs)
    assert exp.lines_added and exp.lines_removed
    projects = {r.project for r in reqs}
    assert {"/home/alice/web_app", "/home/alice/web-app"} <= projects
    # midnight crossings in several zones: a session with requests on two local dates within 3 hours
    for zone in ("UTC", "America/Los_Angeles", "Asia/Kolkata"):
        tz = ZoneInfo(zone)
        by_session: dict[str, list[datetime]] = {}
        for r in reqs:
            by_session.setdefault(r.session_id, []).append(r.timestamp)
        assert any(
            max(ts) - min(ts) < timedelta(hours=3)
            and len({t.astimezone(tz).date() for t in ts}) == 2
            and any(t.astimezone(tz).hour == 23 for t in ts)
            for ts in by_session.values()
        ), zone


def test_layout(features_corpus: tuple[Path, Expected]) -> None:
    root, exp = features_corpus
    sessions = {r.session_id for r in exp.requests}
    subagent_files = old_agent_files = 0
    for path in exp.files:
        rel = path.relative_to(root / "projects")
        folder = rel.parts[0]
        pairs: list[tuple[bytes, Json]] = []
        for ln in path.read_bytes().split(b"\n"):
            try:
                pairs.append((ln, json.loads(ln)))
            except (ValueError, UnicodeDecodeError):
                continue
        objs = [o for _, o in pairs]
        cwds = {o["cwd"] for o in objs if "cwd" in o}
        assert cwds and all(project_dir_name(c) == folder for c in cwds), path
        sids = {o["sessionId"] for o in objs if "sessionId" in o}
        if len(rel.parts) == 4:  # <dir>/<session>/subagents/agent-<id>.jsonl
            subagent_files += 1
            assert rel.parts[2] == "subagents" and rel.name.startswith("agent-")
            assert sids == {rel.parts[1]} and rel.parts[1] in sessions
            assert all(o.get("isSidechain") for o in objs)
        elif rel.name.startswith("agent-"):
            old_agent_files += 1
            assert len(sids) == 1 and sids <= sessions
        else:
            assert len(rel.parts) == 2 and rel.stem in sids
        for ln, o in pairs:
            if o.get("type") == "assistant" and "usage" in o.get("message", {}):
                assert b'"usage":{' in ln  # compact JSON, as Claude Code writes it
    assert subagent_files and old_agent_files


def test_features_off_is_plain(tmp_path: Path) -> None:
    exp = generate(tmp_path, seed=1, sessions=4, requests_per_session=10, features=False)
    assert exp.bad_lines == 0 and not exp.lines_added
    assert not any(r.is_sidechain or r.unknown_model or r.web_search_requests for r in exp.requests)
    got = assert_read_back_matches(tmp_path, exp)
    assert got.copies == 0 and got.pending_tails == got.complete_tails == 0


def test_big_profile_hits_target_and_stays_exact(tmp_path: Path) -> None:
    exp = generate(
        tmp_path, seed=5, sessions=1, requests_per_session=12, big_tool_results=True, target_bytes=2_000_000
    )
    assert exp.bytes_written >= 2_000_000
    assert_read_back_matches(tmp_path, exp)
    results: list[int] = []
    assistant: list[int] = []
    for path in exp.files:
        for ln in path.read_bytes().split(b"\n"):
            if b'"type":"tool_result"' in ln and b'"toolUseResult":{"stdout"' in ln:
                results.append(len(ln))
            elif b'"role":"assistant"' in ln and b'"<synthetic>"' not in ln:
                assistant.append(len(ln))
    assert results and min(results) >= 5_000 and max(results) <= 2_100_000
    assert 1_000 <= sorted(assistant)[len(assistant) // 2] <= 5_000
