"""Reports over the ledger: aggregation (pure, from ``Ledger.rollup`` rows) and rendering.

The split keeps every number a report shows computable without a terminal or a database: ``aggregate``
and ``blocks`` turn rollup rows into report rows, ``render`` draws them as Rich tables, JSON or CSV,
``cost_block`` reproduces Claude Code's ``/cost`` text. Only ``zones`` and ``cost_block.load_session``
touch the outside world (the zone database and the store).
"""
