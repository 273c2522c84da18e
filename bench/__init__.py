"""Speed and memory benchmarks. Run from the repository root, e.g. `python -m bench.block --help`."""
