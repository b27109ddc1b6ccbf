"""Benchmarks shipped with the package, so that ``dqltoolkit bench`` runs wherever dqltoolkit is installed."""
