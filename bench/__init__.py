"""Benchmarks run by ``make bench``; each writes a dated section of docs/BENCHMARKS.md (see bench/report.py)."""
