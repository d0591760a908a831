"""Studies and benchmarks (entry points run as ``python -m experiments.X``)."""
