"""End to end: generate() throughput and memory (python -m bench.e2e.generate)."""
