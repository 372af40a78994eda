"""Helpers the tests share: doubles, databases, servers, the oracle; fixtures stay in conftest."""
