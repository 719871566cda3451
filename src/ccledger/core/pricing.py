"""The price book: which model an id means, what it cost at a moment, and the modifiers that apply.

Costs are computed in integer pico-dollars per token (every book rate times 1e6 is a whole number), so
pricing millions of records is plain integer arithmetic; the one rounding step, to nano-dollars, happens
once per record (see ``core.money``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec

from ccledger.core.records import SYNTHETIC_MODEL, TokenCounts

SNAPSHOT = Path(__file__).with_name("prices.json")  # prices.toml as JSON, written by core.price_snapshot
WEB_SEARCH_USD = Decimal("0.01")  # $10 per 1,000 searches (PRICING)
_ONE = Decimal(1)  # the default multiplier; ``quote`` tests for it by identity first (cheaper than ==)
_PICO_PER_USD_PER_MTOK = 1_000_000  # $1/MTok == 1e6 pico-dollars per token
_KINDS = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")


class PriceBookError(ValueError):
    """The price file is malformed; raised at load so a bad file never prices anything silently."""


class Rates(msgspec.Struct, frozen=True):
    """USD per MTok for each token kind."""

    input: Decimal
    output: Decimal
    cache_write_5m: Decimal
    cache_write_1h: Decimal
    cache_read: Decimal

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str) -> Rates:
        try:
            inp = Decimal(str(data["input"]))
            out = Decimal(str(data["output"]))
        except KeyError as exc:
            raise PriceBookError(f"{where}: missing {exc.args[0]!r}") from None
        # Cache rates default to the documented multipliers when a user file leaves them out.
        def get(name: str, default: Decimal) -> Decimal:
            return Decimal(str(data[name])) if name in data else default

        rates = cls(
            inp,
            out,
            get("cache_write_5m", inp * Decimal("1.25")),
            get("cache_write_1h", inp * 2),
            get("cache_read", inp * Decimal("0.1")),
        )
        for kind in _KINDS:
            if getattr(rates, kind) < 0:
                raise PriceBookError(f"{where}: negative {kind}")
        return rates

    def pico(self) -> tuple[int, int, int, int, int]:
        """Integer pico-dollars per token, in ``_KINDS`` order."""
        out = []
        for kind in _KINDS:
            value = getattr(self, kind) * _PICO_PER_USD_PER_MTOK
            if value != value.to_integral_value():
                raise PriceBookError(f"rate {getattr(self, kind)} has more than 6 decimal places")
            out.append(int(value))
        return tuple(out)  # type: ignore[return-value]


class PricePeriod(msgspec.Struct, frozen=True):
    start: datetime | None
    end: datetime | None
    base: Rates
    long_context: Rates | None = None
    long_context_threshold: int = 200_000
    fast: Rates | None = None
    fast_long_context: Rates | None = None

    def covers(self, ts: datetime) -> bool:
        return (self.start is None or ts >= self.start) and (self.end is None or ts < self.end)


class ModelEntry(msgspec.Struct, frozen=True):
    key: str
    name: str
    ids: tuple[str, ...]
    periods: tuple[PricePeriod, ...]
    source: str = ""
    geo_premium: bool = False  # Claude 4.6+: inference_geo "us" costs 1.1x
    regional_premium: bool = False  # Claude 4.5+: Bedrock regional / multi-region endpoints cost 1.1x
    exception: str = ""

    def period_at(self, ts: datetime) -> PricePeriod:
        for period in self.periods:
            if period.covers(ts):
                return period
        # Before the first or after the last dated period: the nearest one is the best estimate.
        return self.periods[0] if self.periods[0].start and ts < self.periods[0].start else self.periods[-1]


class Quote(msgspec.Struct, frozen=True):
    """The price of one request and how it was reached (reports show the flags)."""

    cost_nanos: int
    model_key: str | None
    unknown: bool
    long_context: bool = False

    @property
    def cost(self) -> Decimal:
        from ccledger.core.money import from_nanos

        return from_nanos(self.cost_nanos)


# --- id normalisation -------------------------------------------------------------------------------

_ARN = re.compile(r"^arn:aws[\w-]*:bedrock:[^:]*:[^:]*:(?:inference-profile|foundation-model)/(.+)$")
_REGION = re.compile(r"^(?:global|us-gov|us|eu|jp|apac|au|ca)\.")
_PROVIDER = re.compile(r"^(?:bedrock|vertex_ai|vertex|anthropic)/")
_BEDROCK_VERSION = re.compile(r"-v\d+(?::\d+)?$")
_VERTEX_DATE = re.compile(r"@(\d{8})$")
_DATE_SUFFIX = re.compile(r"-\d{8}$")
_BRACKET_SUFFIX = re.compile(r"\[[^\]]*\]$")


_BEDROCK_REGIONAL = re.compile(r"^(?:(?:us|eu|jp|apac|au|ca|us-gov)\.)?anthropic\.")


def is_bedrock_regional(model: str) -> bool:
    """A Bedrock id served by a regional or multi-region endpoint: an in-region ``anthropic.…`` id or a
    geographic inference profile (``us.``, ``eu.``…). Only ``global.`` profiles are priced as global."""
    mid = _PROVIDER.sub("", model.strip().lower())
    arn = _ARN.match(mid)
    if arn:
        mid = arn.group(1)
    return bool(_BEDROCK_REGIONAL.match(mid))


def normalise_model_id(model: str) -> str:
    """Reduce any id form Claude Code or a cloud uses to the API id the book lists.

    Handles `[1m]` suffixes, provider prefixes (`bedrock/`), Bedrock ARNs, region inference-profile
    prefixes, the `anthropic.` prefix, `-v1:0` version suffixes, Vertex `@date` and `-latest`.
    """
    mid = model.strip().lower()
    mid = _BRACKET_SUFFIX.sub("", mid)
    mid = _PROVIDER.sub("", mid)
    arn = _ARN.match(mid)
    if arn:
        mid = arn.group(1)
    mid = _REGION.sub("", mid)
    if mid.startswith("anthropic."):
        mid = mid[len("anthropic.") :]
    mid = _BEDROCK_VERSION.sub("", mid)
    mid = _VERTEX_DATE.sub(r"-\1", mid)
    if mid.endswith("-latest"):
        mid = mid[: -len("-latest")]
    return mid


# --- the book ----------------------------------------------------------------------------------------


def _parse_date(value: Any, where: str) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    try:
        d = date.fromisoformat(str(value))
    except ValueError:
        raise PriceBookError(f"{where}: bad date {value!r}") from None
    return datetime(d.year, d.month, d.day, tzinfo=UTC)


def _parse_model(data: Mapping[str, Any]) -> ModelEntry:
    key = str(data.get("key") or "").strip()
    if not key:
        raise PriceBookError("a [[models]] entry has no key")
    raw_periods = data.get("prices")
    if not raw_periods:
        raise PriceBookError(f"{key}: no [[models.prices]]")
    periods = []
    for i, p in enumerate(raw_periods):
        where = f"{key} prices[{i}]"
        lc = p.get("long_context")
        periods.append(
            PricePeriod(
                start=_parse_date(p.get("from"), where),
                end=_parse_date(p.get("until"), where),
                base=Rates.from_mapping(p, where),
                long_context=Rates.from_mapping(lc, where + ".long_context") if lc else None,
                long_context_threshold=int(lc.get("threshold", 200_000)) if lc else 200_000,
                fast=Rates.from_mapping(p["fast"], where + ".fast") if p.get("fast") else None,
                fast_long_context=Rates.from_mapping(p["fast_long_context"], where + ".fast_long_context")
                if p.get("fast_long_context")
                else None,
            )
        )
    periods.sort(key=lambda p: p.start or datetime.min.replace(tzinfo=UTC))
    ids = tuple(dict.fromkeys([key, *(str(i) for i in data.get("ids", []))]))
    return ModelEntry(
        key=key,
        name=str(data.get("name", key)),
        ids=ids,
        periods=tuple(periods),
        source=str(data.get("source", "")),
        geo_premium=bool(data.get("geo_premium", False)),
        regional_premium=bool(data.get("regional_premium", False)),
        exception=str(data.get("exception", "")),
    )


_BOOK_FIELDS = ("models", "aliases", "fallback", "multiplier", "version")


class PriceBook(msgspec.Struct):
    """Resolves model ids and prices usage. Build it with ``PriceBook.load``."""

    models: dict[str, ModelEntry]
    aliases: dict[str, str] = msgspec.field(default_factory=dict)
    fallback: Rates = msgspec.field(
        default_factory=lambda: Rates.from_mapping({"input": "5", "output": "25"}, "fallback")
    )
    multiplier: Decimal = _ONE
    version: str = ""
    _index: dict[str, str] = msgspec.field(default_factory=dict)
    _resolved: dict[str, str | None] = msgspec.field(default_factory=dict)
    _rate_cache: dict[tuple[Any, ...], tuple[int, ...]] = msgspec.field(default_factory=dict)
    _regional_ids: dict[str, bool] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        self._rebuild_index()

    # The fields after ``version`` are caches that pricing fills in: two books that price alike are equal
    # whatever each has priced so far, and a repr does not print thousands of cache entries.
    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in _BOOK_FIELDS)

    def __repr__(self) -> str:
        return (
            f"PriceBook(version={self.version!r}, models={len(self.models)}, aliases={len(self.aliases)}, "
            f"multiplier={self.multiplier})"
        )

    def _rebuild_index(self) -> None:
        self._index = {}
        for entry in self.models.values():
            for mid in entry.ids:
                self._index[normalise_model_id(mid)] = entry.key
        self._resolved = {}
        self._rate_cache = {}

    # -- loading --

    @classmethod
    def load(
        cls,
        user_files: Iterable[Path] = (),
        *,
        fallback_input: Decimal | None = None,
        fallback_output: Decimal | None = None,
    ) -> PriceBook:
        """The shipped book, then each user file on top (later files win), then fallback overrides."""
        # Beside this module (not importlib.resources: that import alone is ~15 ms of every report), and
        # as its JSON snapshot (``core.price_snapshot``): importing tomllib and parsing the TOML cost ~7 ms.
        book = cls.from_toml(msgspec.json.decode(SNAPSHOT.read_bytes()))
        for path in user_files:
            if path.is_file():
                import tomllib

                try:
                    data = tomllib.loads(path.read_text(encoding="utf-8"))
                except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                    raise PriceBookError(f"{path}: {exc}") from None
                book.overlay(data, str(path))
        if fallback_input is not None or fallback_output is not None:
            book.fallback = Rates.from_mapping(
                {
                    "input": fallback_input if fallback_input is not None else book.fallback.input,
                    "output": fallback_output if fallback_output is not None else book.fallback.output,
                },
                "fallback",
            )
            book._rebuild_index()
        return book

    @classmethod
    def from_toml(cls, data: Mapping[str, Any]) -> PriceBook:
        models = {}
        for raw in data.get("models", []):
            entry = _parse_model(raw)
            if entry.key in models:
                raise PriceBookError(f"duplicate model key {entry.key!r}")
            models[entry.key] = entry
        book = cls(models=models, version=str(data.get("version", "")))
        book.overlay({k: v for k, v in data.items() if k != "models"}, "price book")
        return book

    def overlay(self, data: Mapping[str, Any], where: str) -> None:
        """Apply a user price file: replace or add models, add aliases, set fallback and multiplier."""
        for raw in data.get("models", []):
            entry = _parse_model(raw)
            self.models[entry.key] = entry
        for alias, target in (data.get("aliases") or {}).items():
            self.aliases[normalise_model_id(alias)] = normalise_model_id(str(target))
        if "fallback" in data:
            self.fallback = Rates.from_mapping(data["fallback"], f"{where} fallback")
        if "multiplier" in data:
            mult = Decimal(str(data["multiplier"]))
            if mult <= 0:
                raise PriceBookError(f"{where}: multiplier must be > 0")
            self.multiplier = mult
        self._rebuild_index()

    # -- lookup --

    def resolve(self, model: str) -> ModelEntry | None:
        """The book entry an id means, or None when the book does not know it."""
        try:
            key = self._resolved[model]
        except KeyError:
            key = self._resolve_uncached(model)
            self._resolved[model] = key
        return None if key is None else self.models[key]

    def _resolve_uncached(self, model: str) -> str | None:
        mid = normalise_model_id(model)
        mid = self.aliases.get(mid, mid)
        if mid in self._index:
            return self._index[mid]
        undated = _DATE_SUFFIX.sub("", mid)
        return self._index.get(undated)

    def _regional(self, model: str) -> bool:
        hit = self._regional_ids.get(model)
        if hit is None:
            hit = self._regional_ids[model] = is_bedrock_regional(model)
        return hit

    def is_known(self, model: str) -> bool:
        return model == SYNTHETIC_MODEL or self.resolve(model) is not None

    # -- pricing --

    def quote(
        self,
        model: str,
        ts: datetime,
        tokens: TokenCounts,
        *,
        web_search_requests: int = 0,
        service_tier: str | None = None,
        inference_geo: str | None = None,
        speed: str | None = None,
    ) -> Quote:
        """Price one request at its own timestamp with every modifier that applies to it."""
        if model == SYNTHETIC_MODEL:
            return Quote(0, None, False)
        entry = self.resolve(model)
        long_context = False
        if entry is None:
            rates = self._pico_for(("<fallback>",), self.fallback)
            geo = regional = False
        else:
            period = entry.period_at(ts)
            chosen = period.base
            tag = "base"
            # The tier follows the prompt size first; fast mode then picks that tier's fast rates.
            if period.long_context is not None and tokens.prompt > period.long_context_threshold:
                chosen, tag, long_context = period.long_context, "lc", True
                if speed == "fast" and period.fast_long_context is not None:
                    chosen, tag = period.fast_long_context, "fast-lc"
            elif speed == "fast" and period.fast is not None:
                chosen, tag = period.fast, "fast"
            key = (entry.key, period.start, tag)
            rates = self._rate_cache.get(key) or self._pico_for(key, chosen)
            geo = entry.geo_premium and inference_geo is not None and inference_geo.lower() == "us"
            regional = entry.regional_premium and self._regional(model)
        token_pico = (
            tokens.input * rates[0]
            + tokens.output * rates[1]
            + tokens.cache_write_5m * rates[2]
            + tokens.cache_write_1h * rates[3]
            + tokens.cache_read * rates[4]
        )
        web_pico = web_search_requests * 10_000_000_000  # $0.01 == 1e10 pico-dollars
        multiplier = self.multiplier
        # "standard", the tier nearly every request reports, is no modifier: only batch is.
        batch = service_tier is not None and service_tier != "standard" and service_tier.lower() == "batch"
        if not (geo or regional or batch) and (multiplier is _ONE or multiplier == 1):
            # The usual request: no modifier, so pico -> nano is the only division.
            return Quote(_div_half_even(token_pico + web_pico, 1000), None if entry is None else entry.key,
                         entry is None, long_context)
        # Token modifiers as an exact fraction num/den: batch halves, US residency adds 10%.
        num, den = 1, 1
        if batch:
            den *= 2
        if geo:
            num, den = num * 11, den * 10
        if regional:
            num, den = num * 11, den * 10
        numerator = token_pico * num + web_pico * den
        denominator = den * 1000  # pico -> nano
        if multiplier != 1:
            m_num, m_den = multiplier.as_integer_ratio()
            numerator *= m_num
            denominator *= m_den
        return Quote(_div_half_even(numerator, denominator), None if entry is None else entry.key,
                     entry is None, long_context)

    def _pico_for(self, key: tuple[Any, ...], rates: Rates) -> tuple[int, ...]:
        cached = self._rate_cache.get(key)
        if cached is None:
            cached = self._rate_cache[key] = rates.pico()
        return cached


def _div_half_even(n: int, d: int) -> int:
    q, r = divmod(n, d)
    twice = 2 * r
    if twice > d or (twice == d and q % 2 == 1):
        q += 1
    return q
