"""Notes printed without a terminal skip Rich, but their markup must come out as Rich renders it
(compared unwrapped: Rich wraps at 80 columns there, the plain lines do not)."""

from __future__ import annotations

import io

from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console
from rich.errors import MarkupError

from ccledger.cli.flow import plain

_PIECES = ["[yellow]", "[/yellow]", "[/]", "[bold red]", "[1m]", "\\", "[", "]", "note:", " ", "a", "x/y",
           "[#ff0000]", "[link=https://e.x]", "[@click]", "[A]", "'claude-sonnet-4-5[1m]'"]


def _rich(text: str) -> str:
    buf = io.StringIO()
    Console(file=buf, width=10_000, highlight=False, color_system=None).print(text, highlight=False)
    return buf.getvalue().removesuffix("\n")


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=12).map("".join))
def test_plain_reads_as_rich_prints(text: str) -> None:
    try:
        expected = _rich(text)
    except MarkupError:  # e.g. a closing tag with nothing open: Rich refuses, our notes never do that
        return
    assert plain(text) == expected
