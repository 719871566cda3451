"""ccledger: a priced ledger of every Claude Code request, reports over it, and a metering gateway.

Layers, bottom to top (imports point downward only):
``core`` (pure: records, money, pricing, periods) -> ``sources``/``store``/``control`` -> ``reports`` ->
``gateway``/``cli``. ``bootstrap`` is the one place that wires store, price book and clock together.
"""

__version__ = "0.1.0"
