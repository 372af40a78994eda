"""The database side: tables, upserts, ledger, lock, migrations; never imports the API side."""

from etl.database_url import register_dialects

# Engines are made by this package's modules (and by migrations/env.py, which imports them):
# registering here means duckdb:/// resolves to our dialect wherever one is made.
register_dialects()
