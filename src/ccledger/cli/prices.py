"""``ccledger prices``: the book as people read it, and how one id resolves."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime

from rich.console import Console
from rich.table import Table

from ccledger.bootstrap import App
from ccledger.core.pricing import ModelEntry, PricePeriod, normalise_model_id
from ccledger.reports.tables import print_table


def _period_label(p: PricePeriod) -> str:
    start = p.start.date().isoformat() if p.start else "…"
    end = p.end.date().isoformat() if p.end else "…"
    return "always" if not p.start and not p.end else f"{start} → {end}"


def _entry_json(e: ModelEntry) -> dict[str, object]:
    def rates(r):  # type: ignore[no-untyped-def]
        return None if r is None else {k: str(getattr(r, k)) for k in
                                       ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")}

    return {
        "key": e.key, "name": e.name, "ids": list(e.ids), "source": e.source, "geo_premium": e.geo_premium,
        "periods": [
            {"from": p.start.isoformat() if p.start else None, "until": p.end.isoformat() if p.end else None,
             "rates": rates(p.base), "long_context": rates(p.long_context),
             "long_context_threshold": p.long_context_threshold if p.long_context else None,
             "fast": rates(p.fast)}
            for p in e.periods
        ],
    }  # fmt: skip


def print_prices(app: App, console: Console, *, as_json: bool, model: str | None) -> None:
    book = app.book
    if model:
        entry = book.resolve(model)
        if as_json:
            sys.stdout.write(json.dumps({
                "model": model, "normalised": normalise_model_id(model),
                "entry": _entry_json(entry) if entry else None,
                "fallback": None if entry else {"input": str(book.fallback.input),
                                                "output": str(book.fallback.output)},
            }, indent=2) + "\n")  # fmt: skip
            return
        if entry is None:
            console.print(f"{model!r} is not in the price book: priced at the fallback "
                          f"${book.fallback.input}/${book.fallback.output} per MTok and flagged in reports.")
            return
        p = entry.period_at(datetime.now(UTC))
        console.print(f"{model!r} → {entry.key} ({entry.name}): ${p.base.input} in / ${p.base.output} out "
                      f"per MTok now. Source: {entry.source}")
        return
    if as_json:
        out = {"version": book.version, "multiplier": str(book.multiplier),
               "fallback": {"input": str(book.fallback.input), "output": str(book.fallback.output)},
               "models": [_entry_json(e) for e in book.models.values()]}
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
        return
    table = Table(title=f"Price book {book.version} (USD per million tokens)")
    for col in ("Model", "Ids", "Period", "Input", "Output", "Write 5m", "Write 1h", "Read", "Notes"):
        table.add_column(col, justify="right" if col in ("Input", "Output", "Write 5m", "Write 1h", "Read")
                         else "left")
    for e in book.models.values():
        for p in e.periods:
            notes = []
            if p.long_context:
                lc = p.long_context
                notes.append(f">{p.long_context_threshold // 1000}k: ${lc.input}/${lc.output}")
            if p.fast:
                notes.append(f"fast ${p.fast.input}/${p.fast.output}")
            if e.geo_premium:
                notes.append("US-only ×1.1")
            r = p.base
            table.add_row(e.name, ", ".join(e.ids), _period_label(p), str(r.input), str(r.output),
                          str(r.cache_write_5m), str(r.cache_write_1h), str(r.cache_read), "; ".join(notes))
    print_table(console, table)
    console.print(f"Unknown models: ${book.fallback.input} in / ${book.fallback.output} out (flagged). "
                  f"Multiplier: {book.multiplier}. Batch −50%; web search $10 per 1,000.")
