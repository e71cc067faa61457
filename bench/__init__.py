"""Benchmarks run by `make bench` (`python -m bench`): seed, proposals in-process, booking over
HTTP. Each figure is reported next to a baseline measured in the same run on the same machine,
because absolute times drift on shared machines while ratios hold (see ENGINEERING.md)."""
