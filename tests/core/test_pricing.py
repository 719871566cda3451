"""Price book: relations every entry must satisfy, id forms, modifiers. Expected figures are computed
here from the published per-MTok prices, not read back from the book under test."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ccledger.core.money import from_nanos, to_nanos
from ccledger.core.pricing import PriceBook, PriceBookError, normalise_model_id
from ccledger.core.records import SYNTHETIC_MODEL, TokenCounts

BOOK = PriceBook.load()
NOV = datetime(2026, 11, 1, tzinfo=UTC)
M = Decimal(1_000_000)


def usd(tokens: int, per_mtok: str) -> Decimal:
    return Decimal(tokens) * Decimal(per_mtok) / M


@pytest.mark.parametrize("entry", list(BOOK.models.values()), ids=lambda e: e.key)
def test_cache_multipliers_hold_for_every_model(entry):
    for period in entry.periods:
        tiers = [period.base, period.long_context, period.fast, period.fast_long_context]
        for r in filter(None, tiers):
            assert r.cache_write_1h == r.input * 2, entry.key
            if entry.exception:  # the source's own rounding, stated in the entry
                continue
            assert r.cache_write_5m == r.input * Decimal("1.25"), entry.key
            assert r.cache_read == r.input * Decimal("0.1"), entry.key
        assert entry.source, f"{entry.key} has no source line"


@pytest.mark.parametrize("entry", list(BOOK.models.values()), ids=lambda e: e.key)
def test_long_context_rule_for_every_model(entry):
    """Only Sonnet 4/4.5 (and Opus 4.6 before the tier ended) have a >200k tier, Haiku 5.5 one above
    100k; a prompt (input and cache tokens) of exactly the threshold takes the base rate, one token more
    prices the whole request at the long-context rates. Models without a tier: base rates above 200k."""
    for period in entry.periods:
        ts = period.start or datetime(2026, 1, 1, tzinfo=UTC)
        half = (period.long_context_threshold if period.long_context else 200_000) // 2
        at = TokenCounts(input=half, cache_write_5m=half // 2, cache_read=half - half // 2, output=1000)
        over = TokenCounts(input=half + 1, cache_write_5m=half // 2, cache_read=half - half // 2, output=1000)
        base = period.base
        expect_at = usd(half, base.input) + usd(half // 2, base.cache_write_5m)
        expect_at += usd(half - half // 2, base.cache_read) + usd(1000, base.output)
        assert BOOK.quote(entry.key, ts, at).cost == expect_at
        q = BOOK.quote(entry.key, ts, over)
        r = period.long_context or base
        expect_over = usd(half + 1, r.input) + usd(half // 2, r.cache_write_5m)
        expect_over += usd(half - half // 2, r.cache_read) + usd(1000, r.output)
        assert q.cost == expect_over
        assert q.long_context == (period.long_context is not None)
    if entry.key in ("claude-sonnet-4", "claude-sonnet-4-5"):
        lc = entry.periods[0].long_context
        assert lc is not None and (lc.input, lc.output) == (Decimal(6), Decimal("22.50"))


def test_hand_checked_prices():
    t = TokenCounts
    assert BOOK.quote("claude-sonnet-4-5", NOV, t(input=100_000)).cost == Decimal("0.3")
    assert BOOK.quote("claude-sonnet-4-6", NOV, t(input=1_000_000)).cost == Decimal(3)  # 1M at standard
    assert BOOK.quote("claude-opus-4-8", NOV, t(output=1_000_000)).cost == Decimal(25)
    assert BOOK.quote("claude-sonnet-5", NOV, t(cache_write_1h=1_000_000)).cost == Decimal(4)
    assert BOOK.quote("claude-haiku-4-5", NOV, t(cache_read=1_000_000)).cost == Decimal("0.1")
    # web search: $10 per 1,000
    assert BOOK.quote("claude-sonnet-4-5", NOV, t(), web_search_requests=3).cost == Decimal("0.03")
    # batch halves tokens (not web search); US residency x1.1 on 4.6+ only
    q = BOOK.quote("claude-opus-4-6", NOV, t(input=1000, output=1000), service_tier="batch")
    assert q.cost == (usd(1000, "5") + usd(1000, "25")) / 2
    q = BOOK.quote("claude-opus-4-6", NOV, t(input=1000), inference_geo="us", web_search_requests=1)
    assert q.cost == usd(1000, "5") * Decimal("1.1") + Decimal("0.01")
    q = BOOK.quote("claude-sonnet-4-5", NOV, t(input=1000), inference_geo="us")
    assert q.cost == usd(1000, "3")  # Claude 4.5: no residency premium


def test_synthetic_is_free_and_unknown_is_never_free():
    assert BOOK.quote(SYNTHETIC_MODEL, NOV, TokenCounts(input=10**6)).cost_nanos == 0
    q = BOOK.quote("claude-future-9", NOV, TokenCounts(input=10**6, output=10**6, cache_write_1h=10**6))
    assert q.unknown and q.model_key is None
    assert q.cost == Decimal(5) + Decimal(25) + Decimal(10)


@pytest.mark.parametrize(
    ("model", "key"),
    [
        ("claude-sonnet-4-5", "claude-sonnet-4-5"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("claude-3-5-haiku-latest", "claude-3-5-haiku"),
        ("claude-opus-4-8[1m]", "claude-opus-4-8"),
        ("sonnet[1m]", "claude-sonnet-5"),
        ("opus", "claude-opus-5"),
        ("anthropic.claude-sonnet-4-5-20250929-v1:0", "claude-sonnet-4-5"),
        ("us.anthropic.claude-sonnet-4-5-20250929-v1:0", "claude-sonnet-4-5"),
        ("eu.anthropic.claude-haiku-4-5-20251001-v1:0", "claude-haiku-4-5"),
        ("apac.anthropic.claude-opus-4-1-20250805-v1:0", "claude-opus-4-1"),
        ("jp.anthropic.claude-opus-4-6-v1", "claude-opus-4-6"),
        ("global.anthropic.claude-opus-5", "claude-opus-5"),
        ("anthropic.claude-haiku-4-5", "claude-haiku-4-5"),
        ("arn:aws:bedrock:us-east-1:111122223333:inference-profile/us.anthropic.claude-opus-4-5-20251101-v1:0",
         "claude-opus-4-5"),
        ("claude-sonnet-4-5@20250929", "claude-sonnet-4-5"),
        ("claude-opus-4@20250514", "claude-opus-4"),
        ("bedrock/us.anthropic.claude-sonnet-4-20250514-v1:0", "claude-sonnet-4"),
        ("Claude-Sonnet-4-6", "claude-sonnet-4-6"),
    ],
)
def test_id_forms_resolve(model, key):
    entry = BOOK.resolve(model)
    assert entry is not None, normalise_model_id(model)
    assert entry.key == key


def test_prices_follow_the_record_timestamp():
    """Opus 4.6's >200k tier applies before its end date and not after."""
    big = TokenCounts(input=300_000)
    before = BOOK.quote("claude-opus-4-6", datetime(2026, 3, 1, tzinfo=UTC), big).cost
    after = BOOK.quote("claude-opus-4-6", datetime(2026, 4, 1, tzinfo=UTC), big).cost
    assert before == usd(300_000, "10")
    assert after == usd(300_000, "5")


def test_user_file_overrides_adds_and_multiplies(tmp_path: Path):
    f = tmp_path / "prices.toml"
    f.write_text(
        'multiplier = "0.85"\n'
        "[[models]]\nkey = \"claude-sonnet-4-5\"\nids = [\"claude-sonnet-4-5-20250929\"]\nsource = \"contract\"\n"
        '[[models.prices]]\ninput = "2"\noutput = "10"\n'
        "[[models]]\nkey = \"acme-model\"\nids = [\"acme-1\"]\nsource = \"ours\"\n"
        '[[models.prices]]\ninput = "1"\noutput = "2"\n'
    )
    book = PriceBook.load([f])
    q = book.quote("claude-sonnet-4-5-20250929", NOV, TokenCounts(input=10**6, cache_write_5m=10**6))
    assert q.cost == (Decimal(2) + Decimal("2.5")) * Decimal("0.85")
    assert book.quote("acme-1", NOV, TokenCounts(output=10**6)).cost == Decimal(2) * Decimal("0.85")
    assert not book.quote("acme-1", NOV, TokenCounts()).unknown


def test_bad_user_file_is_a_clear_error(tmp_path: Path):
    f = tmp_path / "prices.toml"
    f.write_text('multiplier = "-1"\n')
    with pytest.raises(PriceBookError, match="multiplier"):
        PriceBook.load([f])
    f.write_text("[[models]]\nkey = \"x\"\n")
    with pytest.raises(PriceBookError, match="no"):
        PriceBook.load([f])


def test_money_nanos_round_trip():
    for s in ("0", "0.000000001", "12.345678901", "1e-9", "99999.5"):
        d = Decimal(s)
        assert from_nanos(to_nanos(d)) == d
    assert to_nanos(Decimal("0.0000000005")) == 0  # half-even
    assert to_nanos(Decimal("0.0000000015")) == 2


def test_fast_mode_above_200k_uses_the_fast_long_context_rates():
    """Opus 4.6 (Feb 2026): fast mode $30/$150 up to 200k input, $60/$225 above (P-2026-02)."""
    feb = datetime(2026, 2, 10, tzinfo=UTC)
    big = TokenCounts(input=300_000, output=10_000)
    assert BOOK.quote("claude-opus-4-6", feb, big, speed="fast").cost == usd(300_000, "60") + usd(10_000, "225")
    small = TokenCounts(input=100_000, output=10_000)
    assert BOOK.quote("claude-opus-4-6", feb, small, speed="fast").cost == usd(100_000, "30") + usd(10_000, "150")
    assert BOOK.quote("claude-opus-5", NOV, small, speed="fast").cost == usd(100_000, "10") + usd(10_000, "50")


@pytest.mark.parametrize(
    ("model", "factor"),
    [
        ("us.anthropic.claude-sonnet-4-5-20250929-v1:0", "1.1"),  # multi-region profile, Claude 4.5
        ("anthropic.claude-haiku-4-5-20251001-v1:0", "1.1"),  # in-region endpoint
        ("eu.anthropic.claude-opus-4-6-v1", "1.1"),
        ("global.anthropic.claude-sonnet-4-5-20250929-v1:0", "1"),  # global profile: standard
        ("us.anthropic.claude-sonnet-4-20250514-v1:0", "1"),  # before Claude 4.5: no premium
        ("claude-sonnet-4-5-20250929", "1"),  # first-party API
    ],
)
def test_bedrock_regional_endpoints_cost_ten_percent_more_from_claude_4_5(model, factor):
    q = BOOK.quote(model, NOV, TokenCounts(input=10_000, output=1_000), web_search_requests=1)
    base = BOOK.resolve(model).periods[-1].base
    tokens = usd(10_000, str(base.input)) + usd(1_000, str(base.output))
    assert q.cost == tokens * Decimal(factor) + Decimal("0.01")


_SONNET_45 = ("3", "15", "3.75", "6", "0.30")  # claude-sonnet-4-5, base tier (PRICING)


@given(
    # (input, output, cache write 5m, 1h, cache read): the four prompt kinds sum to under 200k
    tokens=st.tuples(st.integers(0, 49_999), st.integers(0, 150_000), *[st.integers(0, 49_999)] * 3),
    web=st.integers(0, 50),
    batch=st.booleans(),
    regional=st.booleans(),
    multiplier=st.sampled_from([None, "1", "0.85", "1.2"]),
)
@settings(max_examples=200, deadline=None)
def test_quote_matches_the_published_rates_with_every_modifier(tmp_path_factory, tokens, web, batch, regional,
                                                               multiplier):  # fmt: skip
    """The plain request (no modifier, the default multiplier) takes a short path in ``quote``; both
    paths must agree with the published rates. Prompts stay under 200k, so the base tier applies."""
    book = BOOK
    if multiplier is not None:
        f = tmp_path_factory.mktemp("m") / "prices.toml"
        f.write_text(f'multiplier = "{multiplier}"\n')
        book = PriceBook.load([f])
    counts = TokenCounts(*tokens)
    model = "us.anthropic.claude-sonnet-4-5-20250929-v1:0" if regional else "claude-sonnet-4-5-20250929"
    q = book.quote(model, NOV, counts, web_search_requests=web, service_tier="batch" if batch else None)
    token_usd = sum(usd(n, rate) for n, rate in zip(tokens, _SONNET_45, strict=True))
    token_usd *= (Decimal("0.5") if batch else 1) * (Decimal("1.1") if regional else 1)
    want = (token_usd + Decimal(web) * Decimal("0.01")) * Decimal(multiplier or 1)
    assert q.cost_nanos == to_nanos(want)
    assert not q.unknown and not q.long_context


def test_claude_5_1_5_2_and_5_5_models_at_their_published_rates():
    """The rate cards of the models' documentation pages (MODELS-2026-11), typed in here from the pages."""
    t = TokenCounts
    cases = {  # model: (input, output, 5m write, 1h write, read) per MTok
        "claude-opus-5-5": ("4", "20", "5", "8", "0.20"),
        "claude-sonnet-5-5": ("2", "10", "2.50", "4", "0.20"),
        "claude-fable-5-1": ("10", "50", "12.50", "20", "0.25"),
        "claude-mythos-5-1": ("10", "50", "12.50", "20", "0.25"),  # priced as Fable 5.1
        "claude-fable-5-2": ("8", "40", "10", "16", "0.20"),
        "claude-haiku-5-5": ("0.10", "0.50", "0.125", "0.20", "0.01"),
    }
    for model, rates in cases.items():
        counts = (10_000, 20_000, 30_000, 5_000, 40_000)  # a prompt of 85k: under every threshold
        want = sum(usd(n, r) for n, r in zip(counts, rates, strict=True))
        assert BOOK.quote(model, NOV, t(*counts)).cost == want, model
    # Opus 5.5 in fast mode: every rate doubled, as on Opus 5
    fast = BOOK.quote("claude-opus-5-5", NOV, t(input=1_000, output=1_000, cache_read=10_000), speed="fast")
    assert fast.cost == usd(1_000, "8") + usd(1_000, "40") + usd(10_000, "0.40")
    # Haiku 5.5: over 100k of prompt, the whole request at 5x
    big = t(input=60_000, output=1_000, cache_read=40_001)
    want = usd(60_000, "0.50") + usd(1_000, "2.50") + usd(40_001, "0.05")
    q = BOOK.quote("claude-haiku-5-5", NOV, big)
    assert q.cost == want and q.long_context


def test_books_compare_by_their_prices_not_by_what_they_have_priced_so_far():
    """Pricing fills the book's caches: a book that has priced something still equals a fresh one, a
    book with other prices does not, and the repr names the book without its thousands of entries."""
    used, fresh = PriceBook.load(), PriceBook.load()
    used.quote("claude-sonnet-4-5", NOV, TokenCounts(input=1_000, output=1_000))
    used.quote("anthropic.claude-opus-4-8", NOV, TokenCounts(input=1_000))
    assert used == fresh
    discounted = PriceBook.load()
    discounted.multiplier = Decimal("0.8")
    assert discounted != fresh
    assert (used == "a book") is False
    text = repr(used)
    assert "_rate_cache" not in text and "_resolved" not in text and len(text) < 200
    assert f"models={len(fresh.models)}" in text and repr(fresh.version) in text
