"""Estimators: the strict bound is priced by PriceBook.quote itself; expected learns from settlements."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ccledger.control.counters import AdmitMode
from ccledger.control.estimate import (
    UNBOUNDED_WEB_SEARCH_GUESS,
    ExpectedEstimator,
    RequestShape,
    StrictEstimator,
    UnboundedRequest,
    make_estimator,
)
from ccledger.core.pricing import PriceBook
from ccledger.core.records import TokenCounts

TS = datetime(2026, 6, 2, 12, tzinfo=UTC)
# A small book of our own so the numbers do not move when the shipped prices change.
BOOK = PriceBook.from_toml(
    {
        "models": [
            {
                "key": "m-lc",
                "geo_premium": True,
                "prices": [
                    {
                        "input": "3",
                        "output": "15",
                        "long_context": {"threshold": 200_000, "input": "6", "output": "22.50"},
                        "fast": {"input": "30", "output": "150"},
                    }
                ],
            },
            {
                "key": "m-odd",  # a user book where a 5m write costs more than a 1h write
                "prices": [{"input": "1", "output": "5", "cache_write_5m": "9", "cache_write_1h": "2"}],
            },
        ]
    }
)


def shape(body: int, max_tokens: int = 1000, **kw: object) -> RequestShape:
    return RequestShape("m-lc", TS, body, max_tokens=max_tokens, **kw)  # type: ignore[arg-type]


def test_strict_is_the_quote_of_bytes_as_1h_writes_plus_max_tokens() -> None:
    est = StrictEstimator(BOOK, overhead_tokens=0)
    got = est.estimate(shape(10_000, 2000, inference_geo="global"))
    want = BOOK.quote("m-lc", TS, TokenCounts(cache_write_1h=10_000, output=2000)).cost_nanos
    assert got.nanos == want and got.mode is AdmitMode.FIT and got.basis == "strict"
    assert not got.long_context


def test_strict_switches_to_long_context_tier_by_itself() -> None:
    est = StrictEstimator(BOOK, overhead_tokens=1024)
    below = est.estimate(shape(200_000 - 1024, inference_geo="global"))
    above = est.estimate(shape(200_000 - 1023, inference_geo="global"))
    assert not below.long_context and above.long_context
    lc = BOOK.quote("m-lc", TS, TokenCounts(cache_write_1h=200_001, output=1000))
    assert above.nanos == lc.cost_nanos and lc.long_context


def test_strict_applies_fast_mode_geo_and_web_search_like_settlement() -> None:
    est = StrictEstimator(BOOK, overhead_tokens=0, web_search_result_tokens=0)
    # Three searches: up to four sampling rounds, each re-reading the body and the output so far.
    tokens = TokenCounts(cache_write_1h=4 * (5000 + 100), output=100)
    got = est.estimate(shape(5000, 100, speed="fast", inference_geo="us", web_search_max_uses=3))
    want = BOOK.quote("m-lc", TS, tokens, speed="fast", inference_geo="us", web_search_requests=3)
    assert got.nanos == want.cost_nanos


def test_strict_bounds_fast_mode_below_the_long_context_threshold() -> None:
    """m-lc has fast rates but no fast long-context rates: a fast request just under the threshold costs
    more than one over it, so a bound priced only at its (larger) prompt size would be too low."""
    est = StrictEstimator(BOOK, overhead_tokens=0)
    bound = est.estimate(shape(250_000, 100, speed="fast", inference_geo="global"))
    just_below = BOOK.quote("m-lc", TS, TokenCounts(cache_write_1h=200_000, output=100), speed="fast")
    assert not just_below.long_context
    assert bound.nanos >= just_below.cost_nanos


def test_strict_assumes_us_residency_when_the_body_names_no_geo() -> None:
    """A workspace default the gateway cannot see may run the request in the US (x1.1 on a geo-premium
    model): without ``inference_geo`` in the body the bound must include it."""
    est = StrictEstimator(BOOK, overhead_tokens=0)
    tokens = TokenCounts(cache_write_1h=5000, output=100)
    us = BOOK.quote("m-lc", TS, tokens, inference_geo="us").cost_nanos
    plain = BOOK.quote("m-lc", TS, tokens).cost_nanos
    assert us > plain
    assert est.estimate(shape(5000, 100)).nanos == us
    assert est.estimate(shape(5000, 100, inference_geo="us")).nanos == us
    assert est.estimate(shape(5000, 100, inference_geo="global")).nanos == plain  # the body says where


def test_strict_web_search_bound_counts_fees_results_and_rounds() -> None:
    r = 1000
    est = StrictEstimator(BOOK, overhead_tokens=10, web_search_result_tokens=r)
    got = est.estimate(shape(500, 100, inference_geo="global", web_search_max_uses=2))
    prompt = 3 * (500 + 10 + 100) + r * (1 + 2)  # 3 rounds; round k reads the results of k searches
    want = BOOK.quote("m-lc", TS, TokenCounts(cache_write_1h=prompt, output=100), web_search_requests=2)
    assert got.nanos == want.cost_nanos
    assert got.nanos - est.estimate(shape(500, 100, inference_geo="global")).nanos > 2 * 10_000_000  # > $0.02


def test_strict_refuses_a_web_search_without_max_uses_expected_guesses() -> None:
    strict = StrictEstimator(BOOK)
    s = shape(500, 100, web_search_unbounded=True, user_id="ann", session_id="s1")
    with pytest.raises(UnboundedRequest, match="max_uses"):
        strict.estimate(s)
    guess = ExpectedEstimator(strict).estimate(s)  # a guess by design: no refusal in expected mode
    assert guess.basis == "strict" and guess.mode is AdmitMode.HEADROOM
    bounded = strict.estimate(shape(500, 100, web_search_max_uses=UNBOUNDED_WEB_SEARCH_GUESS))
    assert guess.nanos == bounded.nanos


def test_strict_takes_the_dearest_prompt_kind_of_the_book() -> None:
    est = StrictEstimator(BOOK, overhead_tokens=0)
    got = est.estimate(RequestShape("m-odd", TS, 1000, max_tokens=0))
    assert got.nanos == BOOK.quote("m-odd", TS, TokenCounts(cache_write_5m=1000)).cost_nanos


def test_unknown_models_and_missing_max_tokens_are_not_free() -> None:
    est = StrictEstimator(BOOK, overhead_tokens=0, default_max_tokens=64_000)
    got = est.estimate(RequestShape("mystery-model", TS, 1000))
    assert got.nanos == BOOK.quote("mystery-model", TS, TokenCounts(cache_write_1h=1000, output=64_000)).cost_nanos
    assert got.nanos > 0


@settings(max_examples=200, deadline=None)
@given(
    inp=st.integers(0, 300_000),
    cw5=st.integers(0, 100_000),
    cw1=st.integers(0, 100_000),
    cr=st.integers(0, 300_000),
    out=st.integers(0, 64_000),
    slack=st.integers(0, 1000),
    fast=st.booleans(),
    geo=st.sampled_from([None, "us", "global"]),
    max_uses=st.integers(0, 8),
    searched=st.integers(0, 8),
)
def test_strict_bounds_every_request_that_fits_the_body(
    inp: int, cw5: int, cw1: int, cr: int, out: int, slack: int, fast: bool, geo: str | None,
    max_uses: int, searched: int,
) -> None:  # fmt: skip
    actual = TokenCounts(input=inp, cache_write_5m=cw5, cache_write_1h=cw1, cache_read=cr, output=out)
    speed = "fast" if fast else None
    searched = min(searched, max_uses)
    # Settlement: where the request ran (a body without inference_geo may still run in the US) and
    # as many searches as max_uses allows.
    ran_in = geo or "us"
    body = shape(actual.prompt + slack, out + slack, speed=speed, inference_geo=geo, web_search_max_uses=max_uses)
    bound = StrictEstimator(BOOK).estimate(body)
    settled = BOOK.quote("m-lc", TS, actual, speed=speed, inference_geo=ran_in, web_search_requests=searched)
    assert bound.nanos >= settled.cost_nanos


def test_expected_prefers_session_then_user_then_strict() -> None:
    strict = StrictEstimator(BOOK)
    est = ExpectedEstimator(strict)
    s = shape(50_000, user_id="ann", session_id="s1")
    first = est.estimate(s)
    assert first.basis == "strict" and first.nanos == strict.estimate(s).nanos
    assert first.mode is AdmitMode.HEADROOM
    est.observe("ann", "s0", 111)
    assert est.estimate(s) == est.estimate(s) and est.estimate(s).basis == "user"
    assert est.estimate(s).nanos == 111
    est.observe("ann", "s1", 222)
    assert (est.estimate(s).basis, est.estimate(s).nanos) == ("session", 222)
    # Another developer reusing the session id does not inherit ann's history.
    assert est.estimate(shape(50_000, user_id="bob", session_id="s1")).basis == "strict"


def test_expected_memory_is_bounded() -> None:
    est = ExpectedEstimator(StrictEstimator(BOOK), max_entries=2)
    for i in range(5):
        est.observe(f"u{i}", f"s{i}", i)
    assert len(est._sessions) == 2 and len(est._users) == 2
    assert est.estimate(shape(10, user_id="u4", session_id="s4")).nanos == 4
    assert est.estimate(shape(10, user_id="u0", session_id="s0")).basis == "strict"


def test_make_estimator() -> None:
    assert isinstance(make_estimator("strict", BOOK), StrictEstimator)
    assert isinstance(make_estimator("expected", BOOK), ExpectedEstimator)
    with pytest.raises(ValueError):
        make_estimator("optimistic", BOOK)
