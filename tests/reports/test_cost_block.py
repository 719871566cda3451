"""``ccledger cost``: the exact text of Claude Code's /cost block for a hand-made session."""

from __future__ import annotations

import pytest

from ccledger.cli.reports import run_cost
from ccledger.reports.cost_block import compact_number, format_cost, format_duration, short_model_name
from ccledger.store.ledger import CodeChange
from tests.reports.support import HAIKU, SONNET, console_text


def block_lines(console) -> list[str]:
    lines = console_text(console).splitlines()
    assert lines[0].startswith("Session ")
    return lines[1:]


def test_cost_block_exact_lines(app, add, console):
    # Haiku 4.5 ($1/$5): 1234 x 1,000 + 43 x 5,000 nanos = 1,449,000 -> $0.0014
    add("2026-11-23T10:00:00Z", session="sess-1", model=HAIKU, inp=1234, out=43)
    # Sonnet 4.5: 1500 x 3,000 + 1200 x 15,000 + 4900 x 300 + 5300 x 3,750 = 43,845,000 -> $0.0438
    add("2026-11-23T12:00:00Z", session="sess-1", model=SONNET, inp=1500, out=1200, cr=4900, cw5=5300)
    add("2026-11-23T16:33:10.200Z", session="sess-1", model=SONNET)  # wall: 6h 33m 10.2s
    app.ledger.ingest([], [CodeChange("l1", "sess-1", 0, 10, 1), CodeChange("l2", "sess-1", 0, 2, 2)], [])
    run_cost(app, "sess-1", console)
    # total 45,294,000 nanos = $0.045294 -> under $0.50, so four decimals
    assert block_lines(console) == [
        "Total cost:            $0.0453",
        "Total duration (wall): 6h 33m 10.2s",
        "Total code changes:    12 lines added, 3 lines removed",
        "Usage by model:",
        "        claude-haiku:  1.2k input, 43 output, 0 cache read, 0 cache write ($0.0014)",
        "       claude-sonnet:  1.5k input, 1.2k output, 4.9k cache read, 5.3k cache write ($0.0438)",
    ]


@pytest.mark.parametrize(("added", "removed", "text"), [
    (1, 0, "1 line added, 0 lines removed"),
    (0, 1, "0 lines added, 1 line removed"),
    (1, 1, "1 line added, 1 line removed"),
    (2, 11, "2 lines added, 11 lines removed"),
])  # fmt: skip
def test_one_line_is_singular_as_in_claude_code(app, add, console, added, removed, text):
    add("2026-11-23T10:00:00Z", session="s1", inp=1)
    app.ledger.ingest([], [CodeChange("c1", "s1", 0, added, removed)], [])
    run_cost(app, "s1", console)
    assert block_lines(console)[2] == "Total code changes:    " + text


def test_api_duration_when_known_and_two_decimals_above_half_a_dollar(app, add, console):
    # 40,000 output x $15/MTok = $0.60 -> more than $0.50, two decimals
    add("2026-11-23T10:00:00Z", session="s2", out=40_000, duration_ms=300_000)
    add("2026-11-23T10:10:00Z", session="s2", inp=1, duration_ms=79_700)
    run_cost(app, "s2", console)
    lines = block_lines(console)
    assert lines[0] == "Total cost:            $0.60"
    assert lines[1] == "Total duration (API):  6m 19.7s"
    assert lines[2] == "Total duration (wall): 10m 0.0s"
    assert lines[-1] == "       claude-sonnet:  1 input, 40.0k output, 0 cache read, 0 cache write ($0.60)"


def test_latest_session_by_default_and_prefix(app, add, console):
    add("2026-11-23T10:00:00Z", session="aaaa-1111", inp=1)
    add("2026-11-23T09:00:00Z", session="bbbb-2222", inp=2)
    add("2026-11-23T11:00:00Z", session="aaaa-1111", inp=3)
    run_cost(app, None, console)
    assert console_text(console).splitlines()[0] == "Session aaaa-1111"
    console.file.truncate(0)
    console.file.seek(0)
    run_cost(app, "bbb", console)
    assert console_text(console).splitlines()[0] == "Session bbbb-2222"


def test_ambiguous_and_unknown_prefix(app, add, console):
    import typer

    add("2026-11-23T10:00:00Z", session="abc-1", inp=1)
    add("2026-11-23T10:00:00Z", session="abc-2", inp=1)
    with pytest.raises(typer.Exit):
        run_cost(app, "abc", console)
    assert "matches several sessions (abc-1, abc-2)" in console_text(console)
    with pytest.raises(typer.Exit):
        run_cost(app, "zzz", console)
    assert "no session id starts with 'zzz'" in console_text(console)


def test_cost_on_empty_ledger(app, console):
    run_cost(app, None, console)
    assert "No Claude Code usage found yet" in console_text(console)


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0"), (43, "43"), (999, "999"), (1000, "1.0k"), (1234, "1.2k"), (1250, "1.3k"),
        (112_000, "112.0k"), (999_949, "999.9k"), (999_950, "1.0m"), (3_400_000, "3.4m"),
        (2_500_000_000, "2.5b"),
    ],
)  # fmt: skip
def test_compact_number(n, text):
    assert compact_number(n) == text


@pytest.mark.parametrize(
    ("nanos", "text"),
    [
        (0, "$0.0000"), (1_449_000, "$0.0014"), (500_000_000, "$0.5000"), (500_000_001, "$0.50"),
        (550_000_000, "$0.55"), (1_234_565_000_000, "$1234.57"),
    ],
)  # fmt: skip
def test_format_cost(nanos, text):
    assert format_cost(nanos) == text


@pytest.mark.parametrize(
    ("ms", "text"),
    [(4_100, "4.1s"), (379_700, "6m 19.7s"), (23_590_200, "6h 33m 10.2s"), (59_960, "1m 0.0s"), (0, "0.0s")],
)
def test_format_duration(ms, text):
    assert format_duration(ms) == text


@pytest.mark.parametrize(
    ("model", "short"),
    [
        ("claude-sonnet-4-5-20250929", "claude-sonnet"),
        ("claude-3-5-haiku-20241022", "claude-haiku"),
        ("claude-opus-4-1", "claude-opus"),
        ("us.anthropic.claude-opus-4-1-20250805-v1:0", "claude-opus"),
        ("claude-sonnet-4-5@20250929", "claude-sonnet"),
        ("claude-sonnet-4-5[1m]", "claude-sonnet"),
    ],
)
def test_short_model_name(model, short):
    assert short_model_name(model) == short
