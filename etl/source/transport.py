"""Guard each HTTP exchange: one deadline for the whole request, a cap on what is read.

``requests`` bounds each socket read, not a request: a server that drips a byte a second
never times out. A watchdog thread shuts the socket of any request past its deadline (or
of every request once the run is asked to stop), which ends a blocked read at once. The
body is read here, not by ``requests``, so that both its bytes on the wire and its bytes
once inflated are counted against a limit before they are kept.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import HTTPError as Urllib3Error

CHUNK = 256 * 1024
TICK = 0.05  # how often the watchdog looks: the deadline's and a stop's precision
# What we can inflate ourselves, with a bound on the output (zlib's max_length).
ACCEPT_ENCODING = "gzip, deflate"
GZIP_OR_ZLIB = 47  # zlib wbits: 32 + 15 detects a gzip or a zlib header

_current = threading.local()


class BodyTooLarge(Exception):
    """The body passed the byte limit, on the wire or once inflated."""


class BodyUnreadable(Exception):
    """The body was cut short, or its compressed stream is broken."""


class UnsupportedEncoding(Exception):
    """The server used a content-encoding we did not offer."""


@dataclass(eq=False)
class Slot:
    """One request under guard: its connection once known, its deadline, why it was cut."""

    deadline: float
    conn: Any = None
    cut: str | None = None  # "deadline" or "stopped"


def _link(conn: Any) -> None:
    slot: Slot | None = getattr(_current, "slot", None)
    if slot is not None:
        slot.conn = conn


class _TrackedHTTPConnection(HTTPConnection):
    def request(self, *args: Any, **kwargs: Any) -> None:
        _link(self)
        super().request(*args, **kwargs)


class _TrackedHTTPSConnection(HTTPSConnection):
    def request(self, *args: Any, **kwargs: Any) -> None:
        _link(self)
        super().request(*args, **kwargs)


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _TrackedHTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _TrackedHTTPSConnection


class GuardedAdapter(HTTPAdapter):
    """An adapter whose connections tell the watchdog which socket a request uses."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:  # noqa: D102
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}


class ApiSession(requests.Session):
    """A session whose settings are fixed when it is made (see new_session), for GETs only.

    It never looks at a redirect: the client decides, reading Location itself. (Even with
    allow_redirects=False, requests prepares the next hop of a 3xx, reading and inflating
    its whole body without a limit and parsing its Location.)
    """

    def get_redirect_target(self, resp: requests.Response) -> None:
        """Return no redirect target, whatever the response: none is ever followed here."""

    def get_streamed(
        self, url: str, params: Mapping[str, Any] | None, timeout: float
    ) -> requests.Response:
        """Send a GET as ``get(url, params=..., stream=True, allow_redirects=False)`` would.

        The request is prepared from the session's own settings alone: requests' merging
        of per-request settings into them (each checked against runtime Protocols, the
        session's cookies copied into a new jar) is about a fifth of a page request's CPU,
        for settings this client never sets per request.
        """
        request = requests.PreparedRequest()
        request.prepare(
            method="GET",
            url=url,
            headers=self.headers,
            params=params,  # new_session sets no session params
            auth=self.auth,
            cookies=self.cookies,
            hooks=self.hooks,
        )
        return self.send(
            request,
            timeout=timeout,
            stream=True,
            allow_redirects=False,
            proxies=self.proxies,
            verify=self.verify,
            cert=self.cert,
        )


class _HeadersOnly(requests.auth.AuthBase):
    """The session's auth: the headers as given (the bearer token among them), nothing more.

    With no auth set, requests looks up ~/.netrc on every request, and an entry for the
    API's host would replace the token with Basic credentials.
    """

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        return request


def new_session(headers: dict[str, str], base_url: str) -> ApiSession:
    """Return a session whose requests the watchdog can cut, sending ``headers``.

    Every request goes to ``base_url``'s origin, so the environment's proxy and CA bundle
    settings (HTTPS_PROXY, NO_PROXY, REQUESTS_CA_BUNDLE, ...) are read once, here, as
    requests would read them for that URL; requests itself rereads the whole environment
    on every request.
    """
    session = ApiSession()
    session.auth = _HeadersOnly()
    session.trust_env = False  # read below, once
    session.proxies.update(requests.utils.get_environ_proxies(base_url))
    session.verify = (
        os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    )
    adapter = GuardedAdapter()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers.update(headers)
    session.headers["Accept-Encoding"] = ACCEPT_ENCODING
    return session


class Watchdog:
    """Cuts requests past their deadline, and every request once ``stop`` is set."""

    def __init__(self, stop: threading.Event | None = None) -> None:
        self._stop = stop or threading.Event()
        self._slots: set[Slot] = set()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def guard(self, seconds: float) -> Iterator[Slot]:
        """Watch the calling thread's next request for ``seconds`` in all."""
        slot = Slot(deadline=time.monotonic() + seconds)
        with self._lock:
            self._slots.add(slot)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._watch, name="http-watchdog", daemon=True
                )
                self._thread.start()
        _current.slot = slot
        try:
            yield slot
        finally:
            _current.slot = None
            with self._lock:
                self._slots.discard(slot)

    def close(self) -> None:
        """Stop the watchdog thread."""
        self._closed.set()

    def _watch(self) -> None:
        while not self._closed.wait(TICK):
            now = time.monotonic()
            stopped = self._stop.is_set()
            with self._lock:
                slots = list(self._slots)
            for slot in slots:
                if slot.cut is None and (stopped or now >= slot.deadline):
                    slot.cut = "stopped" if stopped else "deadline"
                if slot.cut is not None:
                    _shut(slot.conn)  # again on every tick: it may have connected since


def _shut(conn: Any) -> None:
    sock = getattr(conn, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def read_body(response: requests.Response, *, limit: int) -> bytes:
    """Return the body of a streamed response, inflated, refusing more than ``limit`` bytes.

    Raises:
        BodyTooLarge: the body passed ``limit`` bytes, as sent or inflated.
        UnsupportedEncoding: the server compressed it in a way we did not offer.
        BodyUnreadable: the body was cut short or its compression is broken.
    """
    encoding = response.headers.get("content-encoding", "").strip().lower()
    if encoding in ("", "identity"):
        inflater = None
    elif encoding in ("gzip", "x-gzip", "deflate"):
        inflater = zlib.decompressobj(GZIP_OR_ZLIB)
    else:
        raise UnsupportedEncoding(encoding[:40])
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    body = bytearray()
    wire = 0
    try:
        while chunk := response.raw.read1(CHUNK, decode_content=False):
            wire += len(chunk)
            if wire > limit:
                raise BodyTooLarge
            if inflater is None:
                body += chunk
            else:  # never inflate more than one byte past the limit
                body += inflater.decompress(chunk, limit - len(body) + 1)
            if len(body) > limit:
                raise BodyTooLarge
        if inflater is not None:
            body += inflater.flush()
            if not inflater.eof:
                raise BodyUnreadable("the compressed body ends before its stream does")
    except (Urllib3Error, OSError, zlib.error) as exc:
        raise BodyUnreadable(type(exc).__name__) from exc
    return bytes(body)
