"""Benchmarks: the sync against the fake API, beside a floor measured in the same run."""
