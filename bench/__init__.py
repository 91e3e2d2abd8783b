"""Benchmarks of the spartan_ros runtime (``make bench``: ``python -m bench.engine_bench``)."""
