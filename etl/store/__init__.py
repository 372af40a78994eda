"""The database side: tables, upserts, ledger, lock, migrations; never imports the API side."""
