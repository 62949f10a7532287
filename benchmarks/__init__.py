"""Benchmarks of restarts with and without zocket: ``python benchmarks/run.py --quick``.

A package (not loose scripts) so that the test suite can import the metrics
and the runner can be started as ``python benchmarks/run.py`` from a checkout.
"""
