"""Send one GET within the limits: redirects only on the same path, one deadline, a bounded body.

The HTTP mechanics under the API client: one session per worker thread, a watchdog that
cuts requests past their deadline (or all of them once the run is stopped), a body read
and inflated by us and counted against ``max_response_bytes``, the token blanked out of
every body.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests

from etl.errors import (
    ApiError,
    RedirectRefusedError,
    ResponseTooLargeError,
    RetryableApiError,
    RunInterrupted,
)
from etl.source.transport import (
    ApiSession,
    BodyTooLarge,
    BodyUnreadable,
    Slot,
    UnsupportedEncoding,
    Watchdog,
    new_session,
    read_body,
)

MAX_REDIRECTS = 5
MAX_RESPONSE_BYTES = 32 * 1024 * 1024
REDACTED = "***"


class Exchanger:
    """Sends GETs to one origin with one token, for every worker thread of a run."""

    def __init__(
        self,
        *,
        base_url: str,
        headers: dict[str, str],
        token: str,
        timeout: float,
        max_response_bytes: int,
        stop: threading.Event,
        on_request: Callable[[str], None],
    ) -> None:
        self.base_url = base_url
        self._origin = urlsplit(base_url)[:2]
        self._headers = headers
        self._token = token
        self._token_bytes = token.encode() if token else b"\x00no-token"
        self._timeout = timeout
        self._max_response_bytes = max_response_bytes
        self._on_request = on_request  # counts every request sent, redirects included
        self._watchdog = Watchdog(stop)
        # One session (one connection pool) per worker thread: requests' sessions are not
        # documented as thread-safe.
        self._local = threading.local()
        self._sessions: list[ApiSession] = []
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close every worker's HTTP session and its pooled connections."""
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()
        self._watchdog.close()

    @property
    def _session(self) -> ApiSession:
        session: ApiSession | None = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = new_session(self._headers, self.base_url)
            with self._lock:
                self._sessions.append(session)
        return session

    def get(self, url: str, params: Mapping[str, Any] | None) -> tuple[requests.Response, bytes]:
        """Send one GET (following same-path redirects) and read its body within the limits.

        Raises:
            RedirectRefusedError: a redirect leaves the path or the origin, or loops.
            ResponseTooLargeError: the body passed max_response_bytes.
            RetryableApiError: the body was cut short or is not decodable.
            requests.Timeout: the request passed its deadline (``timeout``, all included).
        """
        path = urlsplit(url).path
        for _ in range(MAX_REDIRECTS + 1):
            self._on_request(path)
            with self._watchdog.guard(self._timeout) as slot:
                try:
                    response = self._session.get_streamed(url, params, self._timeout)
                    body = self._read_body(response, path) if not response.is_redirect else b""
                except (requests.RequestException, RetryableApiError):
                    self._raise_if_cut(slot, path)
                    raise
                self._raise_if_cut(slot, path)
            if not response.is_redirect:
                return response, body
            response.close()
            url, params = self._redirect_target(url, response.headers.get("location", "")), None
        raise RedirectRefusedError(
            f"GET {path} was redirected more than {MAX_REDIRECTS} times; check api_url", url=path
        )

    def _raise_if_cut(self, slot: Slot, path: str) -> None:
        if slot.cut == "stopped":
            raise RunInterrupted("the run was asked to stop")
        if slot.cut == "deadline":
            raise requests.Timeout(f"GET {path} did not complete within {self._timeout:g} s")

    def _redirect_target(self, url: str, location: str) -> str:
        """Return where a redirect points when it stays on the origin and the path.

        Raises:
            RedirectRefusedError: it points anywhere else.
        """
        here = urlsplit(url)
        try:
            target = urljoin(url, location)
            there = urlsplit(target)
        except ValueError as exc:
            raise RedirectRefusedError(
                f"GET {here.path} was redirected to {self.redact(location)[:80]!r}, which is "
                "not a valid URL; check api_url",
                url=here.path,
            ) from exc
        if there[:2] != self._origin or there.path.rstrip("/") != here.path.rstrip("/"):
            shown = self.redact(f"{there.netloc}{there.path}")[:200]
            raise RedirectRefusedError(
                f"GET {here.path} was redirected to {shown}; only {here.path} on "
                f"{self.base_url} is followed, so nothing from elsewhere is stored: check api_url",
                url=here.path,
            )
        return target

    def _read_body(self, response: requests.Response, path: str) -> bytes:
        try:
            body = read_body(response, limit=self._max_response_bytes)
        except BodyTooLarge as exc:
            response.close()
            raise ResponseTooLargeError(
                f"GET {path} sent more than max_response_bytes={self._max_response_bytes} "
                "bytes (as sent or once inflated); refusing it",
                url=path,
            ) from exc
        except UnsupportedEncoding as exc:
            response.close()
            raise ApiError(
                f"GET {path} came compressed as {exc}, which was not asked for; refusing it",
                url=path,
            ) from exc
        except BodyUnreadable as exc:
            response.close()
            raise RetryableApiError(
                f"GET {path} answered {response.status_code} with a body cut short ({exc})",
                status=response.status_code,
                url=path,
            ) from exc
        response.raw.release_conn()  # read to the end: the connection goes back to the pool
        if self._token_bytes in body:  # an API that echoes the token never gets it stored
            body = body.replace(self._token_bytes, REDACTED.encode())
        return body

    def redact(self, text: str) -> str:
        """Return ``text`` with the token blanked out."""
        return text.replace(self._token, REDACTED) if self._token else text
