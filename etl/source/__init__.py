"""The API side: HTTP, paging, and turning API actions into rows. Never imports the store."""
