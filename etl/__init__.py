"""Keep a SQL copy of DigitalOcean image actions.

The Python API (``load_settings``, ``sync_images``, ``RunResult``...) lives in ``etl.api``;
its names are importable from ``etl`` too, loaded on first use so ``import etl`` stays cheap.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = [
    "EXIT_CODES",
    "OK_OUTCOMES",
    "OUTCOMES",
    "ConfigError",
    "EtlError",
    "ImageResult",
    "RunResult",
    "Settings",
    "SyncOutcomeError",
    "__version__",
    "load_settings",
    "sync_images",
]

# Not typing.TYPE_CHECKING: importing typing would triple the cost of ``import etl``;
# type checkers treat any TYPE_CHECKING name as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from etl.api import (
        EXIT_CODES,
        OK_OUTCOMES,
        OUTCOMES,
        ConfigError,
        EtlError,
        ImageResult,
        RunResult,
        Settings,
        SyncOutcomeError,
        load_settings,
        sync_images,
    )
else:  # hidden from type checkers, so a misspelt name is still an error for them

    def __getattr__(name: str) -> object:
        """Import the API on first use of one of its names (it loads SQLAlchemy, requests...)."""
        if name not in __all__:
            raise AttributeError(f"module 'etl' has no attribute {name!r}")
        from etl import api

        value = getattr(api, name)
        globals()[name] = value  # later lookups skip this function
        return value
