"""``ccledger cost [SESSION]``: Claude Code's ``/cost`` block, rebuilt from the ledger for any session.

Why mimic the exact text: people paste ``/cost`` output into issues, PRs and spreadsheets, and compare it
with what ccledger says. Same labels, same alignment, same number style means a diff shows a real
difference, not a formatting one. The formatting rules reproduced here:

- money: more than $0.50 → 2 decimals, otherwise 4 (``$0.55``, ``$0.0123``); same rule per model;
- token counts: below 1,000 as is, above in compact form with one decimal (``523``, ``1.2k``, ``112.0k``,
  ``3.4m``), rounding half up and moving to the next unit at 1000 (``999,950`` → ``1.0m``);
- durations: ``6h 33m 10.2s`` / ``6m 19.7s`` / ``4.1s`` (tenths of a second);
- model lines: the model family (``claude-sonnet-4-5-20250929`` → ``claude-sonnet``), right-aligned in 21
  columns before two spaces, so the numbers start under the values of the lines above.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import ROUND_HALF_UP, Decimal

import msgspec

from ccledger.core.pricing import normalise_model_id
from ccledger.core.records import SYNTHETIC_MODEL
from ccledger.reports.aggregate import ALL_TIME_MS, Totals
from ccledger.store.ledger import Ledger

LABEL_WIDTH = 23  # len("Total duration (wall): ")
MODEL_WIDTH = 21
_HALF_DOLLAR_NANOS = 500_000_000


class SessionLookupError(LookupError):
    """No session, or several, match what the user typed; the message says which."""


class SessionCost(msgspec.Struct):
    session_id: str
    first_ms: int
    last_ms: int
    api_duration_ms: int | None
    lines_added: int
    lines_removed: int
    models: dict[str, Totals] = msgspec.field(default_factory=dict)  # raw model id -> sums

    @property
    def cost_nanos(self) -> int:
        return sum(t.cost_nanos for t in self.models.values())

    @property
    def unknown_models(self) -> list[str]:
        return sorted(m for m, t in self.models.items() if t.unknown_requests)


# -- formatting (pure) ----------------------------------------------------------------------------------


def short_model_name(model: str) -> str:
    """The family name Claude Code shows: ``claude-3-5-haiku-20241022`` → ``claude-haiku``.

    Cloud id forms (Bedrock, Vertex) are normalised first, so the same model reads the same everywhere.
    A non-Claude id keeps its name without a trailing date.
    """
    mid = normalise_model_id(model)
    parts = mid.split("-")
    if parts and parts[0] == "claude":
        family = next((p for p in parts[1:] if p.isalpha()), None)
        if family:
            return f"claude-{family}"
    if len(parts) > 1 and len(parts[-1]) == 8 and parts[-1].isdigit():
        parts = parts[:-1]
    return "-".join(parts) or model


def compact_number(n: int) -> str:
    if n < 1000:
        return str(n)
    units = ((1_000, "k"), (1_000_000, "m"), (1_000_000_000, "b"), (1_000_000_000_000, "t"))
    i = max(j for j, (u, _) in enumerate(units) if n >= u)
    unit, suffix = units[i]
    tenths = (n * 10 + unit // 2) // unit
    if tenths >= 10_000 and i + 1 < len(units):
        unit, suffix = units[i + 1]
        tenths = (n * 10 + unit // 2) // unit
    return f"{tenths // 10}.{tenths % 10}{suffix}"


def format_cost(nanos: int) -> str:
    amount = Decimal(nanos) / 1_000_000_000
    places = Decimal("0.01") if nanos > _HALF_DOLLAR_NANOS else Decimal("0.0001")
    return f"${amount.quantize(places, rounding=ROUND_HALF_UP)}"


def format_duration(ms: int) -> str:
    tenths = (max(ms, 0) + 50) // 100
    hours, rest = divmod(tenths, 36_000)
    minutes, secs = divmod(rest, 600)
    seconds = f"{secs // 10}.{secs % 10}s"
    if hours:
        return f"{hours}h {minutes}m {seconds}"
    if minutes:
        return f"{minutes}m {seconds}"
    return seconds


def _lines(n: int) -> str:
    """``1 line``, ``2 lines``: Claude Code's /cost block says "line" for exactly one."""
    return f"{n} line" if n == 1 else f"{n} lines"


def _label(text: str) -> str:
    return text.ljust(LABEL_WIDTH)


def format_cost_block(s: SessionCost) -> list[str]:
    """The lines of the ``/cost`` block, without trailing newlines."""
    total = format_cost(s.cost_nanos)
    if s.unknown_models:
        total += f" (includes models priced at the fallback rate: {', '.join(s.unknown_models)})"
    lines = [_label("Total cost:") + total]
    if s.api_duration_ms is not None:
        lines.append(_label("Total duration (API):") + format_duration(s.api_duration_ms))
    lines.append(_label("Total duration (wall):") + format_duration(s.last_ms - s.first_ms))
    lines.append(
        _label("Total code changes:") + f"{_lines(s.lines_added)} added, {_lines(s.lines_removed)} removed"
    )
    families: dict[str, Totals] = {}
    # First-used model first, as Claude Code lists them in the order they were called.
    for model, t in sorted(s.models.items(), key=lambda kv: (kv[1].first_ms or 0, kv[0])):
        if model == SYNTHETIC_MODEL and not t.total_tokens:
            continue
        families.setdefault(short_model_name(model), Totals()).merge(t)
    if families:
        lines.append("Usage by model:")
    for name, t in families.items():
        usage_text = (
            f"{compact_number(t.input)} input, {compact_number(t.output)} output, "
            f"{compact_number(t.cache_read)} cache read, {compact_number(t.cache_write)} cache write"
        )
        if t.web_search_requests:
            usage_text += f", {compact_number(t.web_search_requests)} web search"
        lines.append(f"{name}:".rjust(MODEL_WIDTH) + "  " + usage_text + f" ({format_cost(t.cost_nanos)})")
    return lines


# -- loading (reads the store) --------------------------------------------------------------------------


def choose_session(wanted: str, matches: Sequence[str]) -> str:
    """The one id among ``matches`` (ids starting with ``wanted``), or an error that says what to type."""
    if not matches:
        raise SessionLookupError(f"no session id starts with {wanted!r}")
    if len(matches) > 1:
        shown = ", ".join(sorted(matches)[:5]) + (", ..." if len(matches) > 5 else "")
        raise SessionLookupError(f"{wanted!r} matches several sessions ({shown}); type more of the id")
    return matches[0]


def find_session(ledger: Ledger, wanted: str | None) -> str:
    """``wanted`` as an exact id or a unique prefix; without one, the session with the latest request.

    Answered from the quarter-hour cells, so ``ccledger cost`` stays instant however large the ledger.
    """
    if not wanted:
        sid = ledger.latest_session()
        if sid is None:
            raise SessionLookupError("no sessions in the ledger")
        return sid
    matches = ledger.sessions_with_prefix(wanted)
    if wanted in matches:
        return wanted
    return choose_session(wanted, matches)


def load_session(ledger: Ledger, wanted: str | None) -> SessionCost:
    """Everything the block shows for one session, in a few small indexed queries."""
    sid = find_session(ledger, wanted)
    models: dict[str, Totals] = {}
    for r in ledger.rollup(bucket_ms=ALL_TIME_MS, by=["model"], where={"session_id": sid}):
        models.setdefault(r.keys[0], Totals()).add(r)
    first = min(t.first_ms or 0 for t in models.values())
    last = max(t.last_ms or 0 for t in models.values())
    added, removed = ledger.code_changes_by_session([sid]).get(sid, (0, 0))
    return SessionCost(sid, first, last, _api_duration(ledger, sid), added, removed, models)


def _api_duration(ledger: Ledger, session_id: str) -> int | None:
    return ledger.session_duration_ms(session_id)
