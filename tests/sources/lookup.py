"""The three ways the reader finds usage and patch lines in a clean chunk, for tests that compare them.

- ``search``: searching the chunk for the keys (``_marked_lines``), also what judges the other chunks;
- ``decode``: decoding every line of the chunk into structs in one call (``_decoded_lines``);
- ``pointer``: asking simdjson's object of each line (``_long_lines``), for chunks of long lines.
"""

from __future__ import annotations

from typing import Any

LOOKUPS = ("search", "decode", "pointer")


def use_lookup(monkeypatch: Any, lookup: str) -> None:
    from ccledger.sources import transcripts

    monkeypatch.setattr(transcripts, "_POINTER_LINE_BYTES", 0 if lookup == "pointer" else 1 << 40)
    monkeypatch.setattr(transcripts, "_DECODE_CLEAN_CHUNKS", lookup == "decode")


def count_decoded_chunks(monkeypatch: Any) -> list[bool]:
    """A True for each chunk ``_decoded_lines`` read, to show a test reached it."""
    from ccledger.sources import transcripts

    seen: list[bool] = []
    real = transcripts._decoded_lines

    def spy(*args: Any) -> None:
        real(*args)
        seen.append(True)

    monkeypatch.setattr(transcripts, "_decoded_lines", spy)
    return seen
