"""Keep a SQL copy of DigitalOcean image actions."""

__version__ = "0.1.0"
