"""Reports over the ledger: aggregation (pure, from ``Ledger.rollup`` rows) and rendering.

The split keeps every number a report shows computable without a terminal or a database: ``aggregate``
and ``blocks`` turn rollup rows into report rows; ``render`` writes JSON and CSV (and documents their
shapes), ``tables`` draws Rich tables, ``cost_block`` reproduces Claude Code's ``/cost`` text. Only
``zones`` (the tz database) and ``cost_block``'s loaders touch the outside world.
"""
