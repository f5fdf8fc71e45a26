"""The benchmark suite: `python -m tests.bench` (see run.py). Not part of the pytest run."""
