"""Accuracy vs budget: the synthetic long-reasoning task families (tasks/), the trained
reasoner (reasoner.py, train_reasoner.py, checkpoints/), the sweep / fidelity harness
(harness/, cli.py), the ideal-policy separation check (separation.py) and the one-command
full table (table.py); run as python -m bench.accuracy."""
