"""Pieces of bench/accuracy/cli.py: statistics, policy application, reports, fidelity."""
