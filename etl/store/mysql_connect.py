"""PyMySQL connections that share one context for the TLS they offer every server.

PyMySQL 2 offers TLS to a server even when the URL asks for none ("preferred" mode, as
the mysql client does), and for that builds an ssl.SSLContext per connection, loading
the system's certificate authorities: 16-19 ms of CPU a connection here, a tenth of a
--full run on MariaDB, for a context that verifies nothing (no CA given: CERT_NONE).
Built once per process instead, the offer and the handshake are the same. A URL's own
TLS settings (ssl_ca=..., ssl_disabled=...) take PyMySQL's path untouched.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import cache
from typing import Any

_preferred: list[Any] = []  # the process's context for the preferred mode, once built
_building = threading.Lock()


def connect(_dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
    """Open a PyMySQL connection (a do_connect listener; see etl.store.database)."""
    return connection_class()(*cargs, **cparams)


@cache
def connection_class() -> type:
    """Return PyMySQL's Connection, with the preferred mode's context built once."""
    from pymysql.connections import Connection  # the optional extra: imported on use

    class SharedPreferredTls(Connection):  # type: ignore[misc]
        def _create_ssl_ctx(self, sslp: Any) -> Any:
            build = super()._create_ssl_ctx
            if isinstance(sslp, dict) and not sslp:  # the preferred mode's empty settings
                return preferred_context(lambda: build(sslp))
            return build(sslp)

    return SharedPreferredTls


def preferred_context(build: Callable[[], Any]) -> Any:
    """Return the process's context for the preferred mode, built by ``build`` once."""
    with _building:
        if not _preferred:
            _preferred.append(build())
        return _preferred[0]
