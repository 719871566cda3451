"""``skipped_lines``: where the lines the store counts as skipped are, found again in the files, as far
as the store has read them, and no further than asked."""

from __future__ import annotations

import json
from pathlib import Path

from ccledger.core.pricing import PriceBook
from ccledger.services.history import refresh, skipped_lines
from ccledger.store.ledger import Ledger


def _good(n: int) -> str:
    return json.dumps({"type": "assistant", "timestamp": "2026-11-20T10:00:00.000Z", "sessionId": "s1",
                       "requestId": f"req_{n}", "message": {"id": f"msg_{n}", "model": "claude-sonnet-4-5",
                                                            "usage": {"input_tokens": 1, "output_tokens": n}}},
                      separators=(",", ":"))  # fmt: skip


def test_lists_what_the_store_counted_up_to_the_limit_and_reads_no_further(tmp_path: Path) -> None:
    root = tmp_path / "claude"
    proj = root / "projects" / "p"
    proj.mkdir(parents=True)
    a, b, c = proj / "a.jsonl", proj / "b.jsonl", proj / "c.jsonl"
    a.write_text(f"{_good(1)}\n{{bad\n{_good(2)}\n")  # a:2
    b.write_text(f"[1]\n{_good(3)}\nnope\n")  # b:1, b:3
    c.write_text(f"{_good(4)}\n")
    ledger = Ledger.open(f"sqlite:///{tmp_path / 'l.db'}")
    assert refresh(ledger, PriceBook.load(), [root]).bad_lines == 3

    with b.open("a") as fh:
        fh.write("not read yet\n")  # after the store's read position: neither counted nor listed
    found = skipped_lines(ledger)
    assert found.counted == 3 and found.gone == []
    assert [(Path(x.path).name, x.line_no) for x in found.lines] == [("a.jsonl", 2), ("b.jsonl", 1), ("b.jsonl", 3)]

    few = skipped_lines(ledger, limit=1)  # a's line fills the limit: b is counted, not read
    assert few.counted == 3 and [(Path(x.path).name, x.line_no) for x in few.lines] == [("a.jsonl", 2)]

    b.unlink()
    gone = skipped_lines(ledger)
    assert gone.counted == 3 and [(Path(x.path).name, x.line_no) for x in gone.lines] == [("a.jsonl", 2)]
    assert [(Path(p).name, n) for p, n, _ in gone.gone] == [("b.jsonl", 2)]
    past_limit = skipped_lines(ledger, limit=1)  # a file past the limit is still said to be gone
    assert [(Path(p).name, n) for p, n, _ in past_limit.gone] == [("b.jsonl", 2)]
