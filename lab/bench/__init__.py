"""Benchmarks of the lab against reference implementations."""
