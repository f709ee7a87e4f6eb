"""python -m bench.accuracy: see bench/accuracy/cli.py."""

from bench.accuracy.cli import main

main()
