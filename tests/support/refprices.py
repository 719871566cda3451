"""A tiny, independent price table for the test corpus.

Why this exists: the corpus generator must state what every request *should* cost without asking
ccledger (a test that checks ccledger against ccledger's own arithmetic proves nothing). So this module
re-derives prices by hand from ``shared/reference/prices.md`` (§1 base prices, §4 modifiers), with
``Decimal`` throughout and no rounding, in USD per million tokens (MTok).

Rules encoded here (and nothing else):

* base input/output per model family (§1); cache write 5m = 1.25x input, 1h = 2x input, read = 0.1x
  input;
* Sonnet 4 / Sonnet 4.5 long context (historic): when ``input + cache writes + cache reads > 200,000``
  *every* token of the request is billed at input $6 / output $22.50 (so 5m write 7.50, 1h write 12,
  read 0.60). Exactly 200,000 is not long context. The generator only writes such requests with 2026
  timestamps before 2026-03-28, so the rule is applied here without a date check;
* ``service_tier == "batch"``: x0.5 on every token category (cache multipliers stack);
* ``inference_geo == "us"`` on Claude 4.6+ models: x1.1 on every token category;
* Bedrock regional and multi-region endpoints (§4): a Bedrock id without the ``global.`` profile
  prefix (``anthropic.…`` in-region, or ``us.``/``eu.``/``apac.``/``jp.``… profiles) costs x1.1 on every
  token category for Claude 4.5 models and later; ``global.`` and non-Bedrock ids are standard;
* web search: $10 per 1,000 requests = $0.01 each, never multiplied (the generator never combines web
  search with batch, so whether batch would halve the search fee does not matter);
* unknown models: fallback $5 input / $25 output with the same cache multipliers, flagged ``unknown``.

Model ids are normalised the way prices.md §2 describes: Bedrock region prefixes (``us.``, ``global.``
...), the ``anthropic.`` vendor prefix, ``-v1:0`` suffixes, Vertex ``@20250929`` and dated
``-20250929`` snapshots all price as their base model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

MTOK = Decimal(1_000_000)
CACHE_WRITE_5M = Decimal("1.25")
CACHE_WRITE_1H = Decimal(2)
CACHE_READ = Decimal("0.1")
BATCH = Decimal("0.5")
GEO_US = Decimal("1.1")
WEB_SEARCH_EACH = Decimal("0.01")  # $10 per 1,000
LONG_CONTEXT_THRESHOLD = 200_000  # strictly above this is long context
LONG_INPUT = Decimal(6)
LONG_OUTPUT = Decimal("22.50")


@dataclass(frozen=True)
class ModelPrice:
    """List price of one model family, per MTok, plus which modifiers can apply to it."""

    family: str
    input: Decimal
    output: Decimal
    long_context: bool = False  # historic Sonnet 4 / 4.5 >200k tier
    geo_premium: bool = False  # Claude 4.6+: inference_geo "us" costs 1.1x
    claude_45_plus: bool = False  # Bedrock regional / multi-region endpoints cost 1.1x


def _p(
    family: str, inp: str, out: str, *, long_context: bool = False, geo: bool = False, c45: bool = False
) -> ModelPrice:
    return ModelPrice(family, Decimal(inp), Decimal(out), long_context=long_context, geo_premium=geo,
                      claude_45_plus=c45 or geo)


# Keyed by the normalised id (see normalize_model). Hand-copied from prices.md §1.
PRICES: dict[str, ModelPrice] = {
    "claude-fable-5": _p("fable-5", "10", "50", geo=True),
    "claude-opus-5": _p("opus-5", "5", "25", geo=True),
    "claude-opus-4-8": _p("opus-4-8", "5", "25", geo=True),
    "claude-opus-4-7": _p("opus-4-7", "5", "25", geo=True),
    "claude-opus-4-6": _p("opus-4-6", "5", "25", geo=True),
    "claude-opus-4-5": _p("opus-4-5", "5", "25", c45=True),
    "claude-opus-4-1": _p("opus-4-1", "15", "75"),
    "claude-opus-4": _p("opus-4", "15", "75"),
    "claude-sonnet-5": _p("sonnet-5", "2", "10", geo=True),
    "claude-sonnet-4-6": _p("sonnet-4-6", "3", "15", geo=True),
    "claude-sonnet-4-5": _p("sonnet-4-5", "3", "15", long_context=True, c45=True),
    "claude-sonnet-4": _p("sonnet-4", "3", "15", long_context=True),
    "claude-haiku-4-5": _p("haiku-4-5", "1", "5", c45=True),
    "claude-3-5-haiku": _p("haiku-3-5", "0.80", "4"),
}

# Aliases that are not simply a dated form of a key above.
_ALIASES: dict[str, str] = {
    "claude-opus-4-0": "claude-opus-4",
    "claude-sonnet-4-0": "claude-sonnet-4",
    "claude-3-5-haiku-latest": "claude-3-5-haiku",
}

FALLBACK = _p("fallback", "5", "25")

_ARN = re.compile(r"^arn:aws[\w-]*:bedrock:[^/]*/")
_REGION = re.compile(r"^(?:global|us|eu|jp|apac|us-gov)\.")
_VERSION_SUFFIX = re.compile(r"-v\d+(?::\d+)?$")
_VERTEX_DATE = re.compile(r"@\d{8}$")
_DATE = re.compile(r"-\d{8}$")


def normalize_model(model: str) -> str:
    """Reduce a provider-specific or dated id to the family key used in ``PRICES``.

    Why: Claude Code writes whatever id the provider accepted (Bedrock profiles, Vertex ``@date``,
    dated snapshots); the bill is the same as for the base model.
    """
    m = model.strip().lower()
    m = _ARN.sub("", m)
    for prefix in ("bedrock/", "vertex_ai/", "anthropic/"):
        if m.startswith(prefix):
            m = m[len(prefix) :]
    m = _REGION.sub("", m)
    if m.startswith("anthropic."):
        m = m[len("anthropic.") :]
    m = m.removesuffix("[1m]")
    m = _VERSION_SUFFIX.sub("", m)
    m = _VERTEX_DATE.sub("", m)
    m = _DATE.sub("", m)
    return _ALIASES.get(m, m)


def is_bedrock_regional(model: str) -> bool:
    """A Bedrock id served by a regional or multi-region endpoint (anything but a ``global.`` profile)."""
    m = _ARN.sub("", model.strip().lower()).removeprefix("bedrock/")
    if m.startswith("global."):
        return False
    return bool(re.match(r"^(?:(?:us|eu|jp|apac|au|ca|us-gov)\.)?anthropic\.", m))


def lookup(model: str) -> tuple[ModelPrice, bool]:
    """Return ``(price, unknown)``; unknown models get ``FALLBACK`` so their cost is still finite."""
    price = PRICES.get(normalize_model(model))
    if price is None:
        return FALLBACK, True
    return price, False


def is_long_context(model: str, input_tokens: int, cache_write: int, cache_read: int) -> bool:
    """True when the historic Sonnet 4/4.5 tier applies: input side strictly above 200,000 tokens."""
    price, _ = lookup(model)
    return price.long_context and input_tokens + cache_write + cache_read > LONG_CONTEXT_THRESHOLD


def request_cost(
    model: str,
    *,
    input_tokens: int,
    output_tokens: int,
    cache_write_5m: int = 0,
    cache_write_1h: int = 0,
    cache_read: int = 0,
    web_search_requests: int = 0,
    service_tier: str | None = None,
    inference_geo: str | None = None,
) -> tuple[Decimal, bool]:
    """Exact USD cost of one deduplicated request and whether the model was unknown.

    The formula is spelled out term by term so a reader can check it against prices.md.
    """
    price, unknown = lookup(model)
    if is_long_context(model, input_tokens, cache_write_5m + cache_write_1h, cache_read):
        rate_in, rate_out = LONG_INPUT, LONG_OUTPUT
    else:
        rate_in, rate_out = price.input, price.output
    tokens = (
        input_tokens * rate_in
        + output_tokens * rate_out
        + cache_write_5m * rate_in * CACHE_WRITE_5M
        + cache_write_1h * rate_in * CACHE_WRITE_1H
        + cache_read * rate_in * CACHE_READ
    )
    multiplier = Decimal(1)
    if service_tier == "batch":
        multiplier *= BATCH
    if inference_geo == "us" and price.geo_premium:
        multiplier *= GEO_US
    if price.claude_45_plus and not unknown and is_bedrock_regional(model):
        multiplier *= GEO_US
    return tokens * multiplier / MTOK + web_search_requests * WEB_SEARCH_EACH, unknown
