"""ccledger: a priced ledger of every Claude Code request, reports over it, and a metering gateway.

Layers, bottom to top (imports point downward only):
``core`` (pure: records, money, pricing, periods) -> ``sources``/``store``/``control`` -> ``reports`` ->
``gateway``/``cli``. ``bootstrap`` is the one place that wires store, price book and clock together.

Value types are ``msgspec.Struct``s, not dataclasses: a dataclass writes and compiles its methods when its
module is imported (1-1.5 ms a class on the bench VM, ~30 ms over the classes a report imports, a sixth
of a warm ``ccledger daily``), a Struct is built in C in a few microseconds, and the reader needs msgspec
anyway. (``control.spend.ResolvedCaps`` stays a dataclass: it is also a ``Mapping``.)
"""

import sys as _sys

__version__ = "0.1.0"

if "msgspec" not in _sys.modules and "typing_extensions" not in _sys.modules:
    # msgspec reads type hints with typing_extensions when that is installed (it is wherever Typer or
    # pydantic are) and with typing otherwise; on Python >= 3.11 both give the same hints for every
    # annotation ccledger writes. typing_extensions imports inspect, and inspect ast, dis and tokenize:
    # ~38M instructions, a ninth of a warm ``ccledger daily``, for nothing a report uses. It is hidden
    # only while msgspec loads (msgspec falls back when the import fails) and importable right after.
    _sys.modules["typing_extensions"] = None  # type: ignore[assignment]
    try:
        import msgspec  # noqa: F401
    finally:
        del _sys.modules["typing_extensions"]
