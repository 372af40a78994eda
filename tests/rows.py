"""Kept only for tests/test_concurrency.py, which its owner is rewriting: use tests.support.rows."""

from tests.support.rows import read_rows, without_bookkeeping

__all__ = ["read_rows", "without_bookkeeping"]
