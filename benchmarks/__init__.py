"""Benchmarks: scripts that measure against a baseline taken in the same run (`python -m benchmarks` runs them all)."""
