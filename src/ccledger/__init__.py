"""ccledger: a priced ledger of every Claude Code request, reports over it, and a metering gateway.

Layers, bottom to top (imports point downward only):
``core`` (pure: records, money, pricing, periods) -> ``sources``/``store``/``control`` -> ``reports`` ->
``gateway``/``cli``. ``bootstrap`` is the one place that wires store, price book and clock together.

Value types are ``msgspec.Struct``s, not dataclasses: a dataclass writes and compiles its methods when its
module is imported (1-1.5 ms a class on the bench VM, ~30 ms over the classes a report imports, a sixth
of a warm ``ccledger daily``), a Struct is built in C in a few microseconds, and the reader needs msgspec
anyway. (``control.spend.ResolvedCaps`` stays a dataclass: it is also a ``Mapping``.)
"""

__version__ = "0.1.0"
