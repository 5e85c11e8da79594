"""Benchmarks: measured side by side in one process, printed as ratios (never timed tests)."""
