"""Pieces of bench/accuracy.py: statistics, policy application, reports, fidelity."""
