"""Benchmarks and the accuracy instrument (not part of the installed package)."""
