"""Use cases that combine sources, the store and the price book (above them, below the CLI/gateway)."""
