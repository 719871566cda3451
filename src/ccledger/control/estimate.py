"""Cost estimates made before a request runs, which admission reserves against spend caps.

Two policies, because a cap can be hard or soft (spend-limits.md §C2):

* ``strict`` is an upper bound, so with ``AdmitMode.FIT`` spend never passes the cap. It is priced by the
  very ``PriceBook.quote`` that prices the settled request, so long-context tiers, fast mode, the US
  residency multiplier and the book multiplier are all included (a separate estimate formula is how
  LiteLLM came to ignore the long-context tier, PR LL#40002). Its cost: near the cap a developer is
  refused while a realistic request would still fit.
* ``expected`` (default) guesses the previous request's actual cost and is admitted with
  ``AdmitMode.HEADROOM``: a near-cap developer is not refused because of a large worst case, and spend
  ends at most one request's cost over the cap when the guesses are not low (see ``AdmitMode``).
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime
from typing import NamedTuple, Protocol

import msgspec

from ccledger.control.counters.base import AdmitMode
from ccledger.core.pricing import PriceBook
from ccledger.core.records import TokenCounts

STRICT = "strict"
EXPECTED = "expected"
ESTIMATORS = (STRICT, EXPECTED)

#: The strict bound's geo when the request names none: the workspace default may be ``us`` (x1.1 on every
#: token of a ``geo_premium`` model), and the gateway cannot see that default, so it assumes the dearer one.
ASSUMED_GEO = "us"
#: Prompt tokens one web search's results may add. The API documents no maximum; results are typically a
#: few thousand to tens of thousands of tokens, so this is an allowance with a margin, not a proven bound.
WEB_SEARCH_RESULT_TOKENS = 25_000
#: Searches the *expected* estimator's strict fallback assumes for a web_search tool without ``max_uses``
#: (the strict estimator itself refuses such a request: see ``UnboundedRequest``).
UNBOUNDED_WEB_SEARCH_GUESS = 10


class UnboundedRequest(ValueError):
    """The strict estimator cannot bound the request's cost; the message says what the client must add."""


class RequestShape(msgspec.Struct, frozen=True):
    """What the gateway knows about a request before sending it upstream.

    ``body_bytes`` is the size of the JSON body as received; ``max_tokens`` as the client asked (the API
    requires it; when absent the estimator assumes its ``default_max_tokens``). ``inference_geo`` is the
    body's own field (None: not given). ``web_search_max_uses`` sums ``max_uses`` over the body's web
    search tools; ``web_search_unbounded`` says one of them has no ``max_uses``. ``session_id`` is Claude
    Code's session id when the gateway can see one (``metadata.user_id`` or a header). ``service_tier``
    is informational: the strict bound never applies a tier discount.
    """

    model: str
    ts: datetime
    body_bytes: int
    max_tokens: int | None = None
    speed: str | None = None
    inference_geo: str | None = None
    service_tier: str | None = None
    web_search_max_uses: int = 0
    web_search_unbounded: bool = False
    user_id: str = ""
    session_id: str = ""


class Estimate(NamedTuple):
    """Nano-dollars to reserve and the admission mode the estimate is valid for."""

    nanos: int
    mode: AdmitMode
    basis: str  # "strict", "session" or "user": where the number came from (logged with blocks)
    long_context: bool = False


class Estimator(Protocol):
    def estimate(self, shape: RequestShape) -> Estimate: ...

    def observe(self, user_id: str, session_id: str, actual_nanos: int) -> None:
        """Feed a settled request's actual cost back (a no-op for estimators that learn nothing)."""
        ...

    def recent(self, user_id: str, session_id: str) -> Estimate | None:
        """What ``estimate`` returns for this user and session when history alone decides it, else None."""
        ...


# Kinds a prompt token can be billed as; the bound takes whichever the book prices highest (1h cache
# writes in the shipped book, but a user price file may say otherwise).
_PROMPT_KINDS = ("input", "cache_write_5m", "cache_write_1h", "cache_read")


class StrictEstimator:
    """Upper bound: every body byte billed as a prompt token of the dearest kind, plus ``max_tokens`` output.

    Why bytes bound tokens: a token is at least one byte of the text it encodes, and the JSON body carries
    every prompt byte plus syntax. ``overhead_tokens`` covers what the API adds to the prompt itself (the
    tool-use system prompt is a few hundred tokens). Not a bound for images and PDFs whose billed tokens
    can exceed their base64 size (rare: an image's tokens are far fewer than its bytes); thinking tokens
    are inside ``max_tokens``. Using the same ``prompt`` total for the tier test as settlement does means
    a request that settles in the long-context tier is always estimated in it too; and as a bound above
    the tier threshold is also priced at the threshold itself, a request that settles below it (where
    fast mode may cost more than the long-context tier) is bounded as well.

    Modifiers, each taken at its dearest where the body does not settle it:

    * ``inference_geo``: the body's value when given, else ``ASSUMED_GEO`` (``us``, x1.1 for models with
      ``geo_premium``), because a workspace default the gateway cannot see may put the request there.
    * ``speed``: the body's value (fast mode must be asked for in the body).
    * ``service_tier``: ignored. The book's only tier price is the batch discount, which a Messages call
      never gets, so no discount is ever applied to the bound.
    * Web search, with ``n`` = the sum of the web search tools' ``max_uses``: ``n`` x $0.01, and the
      prompt grows because the API runs the searches in a server-side loop: up to ``n + 1`` sampling
      rounds each re-read the body, the output so far (at most ``max_tokens``) and the results of the
      searches made so far (``web_search_result_tokens`` each, an allowance: the API documents no
      maximum). So the prompt bound is ``(n+1)(body+overhead+max_tokens) + R*n(n+1)/2``; it is large,
      which is the price of a hard cap on a request whose size the body does not fix.
    * A web search tool without ``max_uses`` has no bound at all: ``estimate`` raises
      ``UnboundedRequest`` (the gateway answers 400 asking for ``max_uses``; Claude Code's WebSearch
      tool sends ``max_uses``). ``bound_nanos`` alone assumes ``UNBOUNDED_WEB_SEARCH_GUESS`` searches,
      for the expected estimator's fallback, which is a guess by design.
    """

    def __init__(
        self, book: PriceBook, *, overhead_tokens: int = 1024, default_max_tokens: int = 128_000,
        web_search_result_tokens: int = WEB_SEARCH_RESULT_TOKENS,
    ):  # fmt: skip
        if overhead_tokens < 0 or default_max_tokens <= 0 or web_search_result_tokens < 0:
            raise ValueError(
                "overhead_tokens and web_search_result_tokens must be >= 0, default_max_tokens > 0"
            )
        self.book = book
        self.overhead_tokens = overhead_tokens
        self.default_max_tokens = default_max_tokens
        self.web_search_result_tokens = web_search_result_tokens

    def bound_nanos(self, shape: RequestShape) -> tuple[int, bool]:
        """The worst-case cost and whether it was priced in the long-context tier."""
        output = max(0, shape.max_tokens if shape.max_tokens is not None else self.default_max_tokens)
        searches = max(0, shape.web_search_max_uses)
        if shape.web_search_unbounded:
            searches += UNBOUNDED_WEB_SEARCH_GUESS
        prompt = max(0, shape.body_bytes) + self.overhead_tokens
        if searches:
            rounds = searches + 1
            prompt = rounds * (prompt + output) + self.web_search_result_tokens * searches * rounds // 2
        geo = shape.inference_geo or ASSUMED_GEO
        sizes = [prompt]
        entry = self.book.resolve(shape.model)
        if entry is not None:
            period = entry.period_at(shape.ts)
            if period.long_context is not None and prompt > period.long_context_threshold:
                # Price is not monotone across the tier boundary (fast mode without fast long-context
                # rates is dearer below it), so the largest prompt below the boundary is a candidate too.
                sizes.append(period.long_context_threshold)
        best = (0, False)
        for size in sizes:
            for kind in _PROMPT_KINDS:
                quote = self.book.quote(
                    shape.model,
                    shape.ts,
                    TokenCounts(output=output, **{kind: size}),
                    web_search_requests=searches,
                    inference_geo=geo,
                    speed=shape.speed,
                )
                best = max(best, (quote.cost_nanos, quote.long_context))
        return best

    def estimate(self, shape: RequestShape) -> Estimate:
        if shape.web_search_unbounded:
            raise UnboundedRequest(
                "this gateway enforces strict spend limits, which need a bound on every request's cost: "
                "give the web_search tool a max_uses"
            )
        nanos, long_context = self.bound_nanos(shape)
        return Estimate(nanos, AdmitMode.FIT, STRICT, long_context)

    def observe(self, user_id: str, session_id: str, actual_nanos: int) -> None:
        return None

    def recent(self, user_id: str, session_id: str) -> Estimate | None:
        """Always None: a bound depends on the request, never on history."""
        return None


class _LRU:
    """A dict that forgets its least recently used entries beyond ``size``."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._data: OrderedDict[tuple[str, str], int] = OrderedDict()

    def get(self, key: tuple[str, str]) -> int | None:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: tuple[str, str], value: int) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self._size:
            self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


class ExpectedEstimator:
    """The previous settled request's actual cost in the same session, else the user's last, else strict.

    Why the previous request: Claude Code re-sends a growing conversation, so consecutive requests of a
    session cost about the same, and the guess errs low only by that growth. Sessions are keyed with
    their user so a client-chosen session id cannot borrow another developer's history. Memory is two
    bounded LRU maps (``max_entries`` each); a forgotten session falls back to the user, then to strict.
    Feed ``observe`` with requests that completed normally: an aborted request's floor-billed cost would
    make the next guess low, and low guesses are what loosen ``HEADROOM``'s bound.
    """

    def __init__(self, strict: StrictEstimator, *, max_entries: int = 10_000) -> None:
        if max_entries <= 0:
            raise ValueError("max_entries must be > 0")
        self.strict = strict
        self._sessions = _LRU(max_entries)
        self._users = _LRU(max_entries)

    def estimate(self, shape: RequestShape) -> Estimate:
        recent = self.recent(shape.user_id, shape.session_id)
        if recent is not None:
            return recent
        nanos, long_context = self.strict.bound_nanos(shape)
        return Estimate(nanos, AdmitMode.HEADROOM, STRICT, long_context)

    def recent(self, user_id: str, session_id: str) -> Estimate | None:
        """The estimate from history alone (session, else user), or None when ``estimate`` would need the
        request's shape: lets the gateway skip describing a request whose guess is already known."""
        if session_id:
            last = self._sessions.get((user_id, session_id))
            if last is not None:
                return Estimate(last, AdmitMode.HEADROOM, "session")
        if user_id:
            last = self._users.get(("", user_id))
            if last is not None:
                return Estimate(last, AdmitMode.HEADROOM, "user")
        return None

    def observe(self, user_id: str, session_id: str, actual_nanos: int) -> None:
        if actual_nanos < 0:
            raise ValueError("actual_nanos must be >= 0")
        if session_id:
            self._sessions.put((user_id, session_id), actual_nanos)
        if user_id:
            self._users.put(("", user_id), actual_nanos)


def make_estimator(
    name: str, book: PriceBook, *, max_entries: int = 10_000
) -> StrictEstimator | ExpectedEstimator:
    """The estimator a setting names: ``strict`` or ``expected``."""
    strict = StrictEstimator(book)
    if name == STRICT:
        return strict
    if name == EXPECTED:
        return ExpectedEstimator(strict, max_entries=max_entries)
    raise ValueError(f"unknown estimator {name!r}; expected one of {ESTIMATORS}")
