"""Accuracy vs budget: the synthetic long-reasoning task (tasks/), the trained reasoner
(reasoner.py, train_reasoner.py, checkpoints/) and the sweep / fidelity harness (harness/);
run as python -m bench.accuracy."""
