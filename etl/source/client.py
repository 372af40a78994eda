"""The only module that speaks HTTP: session, auth, timeouts, retries and rate-limit headers."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)
from tenacity.stop import stop_base

from etl import __version__
from etl.errors import (
    ApiError,
    ApiUnreachableError,
    AuthError,
    DeferredError,
    NotFoundError,
    RedirectRefusedError,
    ResponseTooLargeError,
    RetryableApiError,
    RunInterrupted,
)
from etl.source.transport import (
    BodyTooLarge,
    BodyUnreadable,
    Slot,
    UnsupportedEncoding,
    Watchdog,
    new_session,
    read_body,
)
from etl.sync.ratelimit import RateLimiter

logger = logging.getLogger(__name__)

USER_AGENT = f"do-image-actions/{__version__}"
# 429 is the rate-limit answer; 5xx are transient server faults (501 is not: it never heals).
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
# Network faults and bodies cut short are as transient as a 503.
TRANSIENT_ERRORS = (
    RetryableApiError,
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)
BACKOFF_MULTIPLIER = 0.5  # first backoff 0.5 s, then 1, 2, 4 ... up to max_retry_wait
MAX_REDIRECTS = 5
MAX_RESPONSE_BYTES = 32 * 1024 * 1024
REDACTED = "***"


@dataclass(frozen=True)
class Answer:
    """A 200's JSON object and a fingerprint of the bytes it came in.

    ``body`` is None when the bytes matched the known fingerprint the caller passed:
    they were parsed before, so they are not parsed again.
    """

    body: dict[str, Any] | None
    digest: str


@dataclass
class ClientStats:
    """What the client spent: requests made, retries, seconds slept on rate limits."""

    requests: int = 0
    retries: int = 0
    rate_limit_wait: float = 0.0
    ratelimit_remaining: int | None = None
    ratelimit_limit: int | None = None
    ratelimit_reset: float | None = None


def _header_number(headers: Mapping[str, str], name: str) -> float | None:
    value = headers.get(name)  # requests' headers are case-insensitive
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None


def parse_json(content: bytes) -> Any:
    """Return the JSON value of UTF-8 ``content``, or None when it is not valid JSON.

    RFC 8259 JSON is UTF-8: invalid bytes make invalid JSON, never U+FFFD. Nesting deeper
    than Python's parser goes is refused the same way, not raised as RecursionError.
    """
    try:
        return json.loads(content.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None


def _text(value: Any, limit: int = 200) -> str:
    return value[:limit] if isinstance(value, str) else ""


def _error_detail(
    response: requests.Response, content: bytes
) -> tuple[str, str | None, str | None]:
    """Return 'status id: message', the error id and the request id of an error response."""
    body = parse_json(content)
    if isinstance(body, dict):
        error_id, message = _text(body.get("id"), 60), _text(body.get("message"))
        detail = f"{response.status_code} {error_id}: {message}".strip()
        return detail, error_id or None, _text(body.get("request_id"), 80) or None
    return f"{response.status_code} {_text(response.reason, 60)}", None, None


class stop_when_waits_exceed(stop_base):  # named like tenacity's own stops
    """Stop when the waits scheduled so far plus the next one would pass a bound.

    It counts scheduled waits, not wall time, so the bound holds with any sleep function.
    """

    def __init__(self, max_total_wait: float) -> None:
        self.max_total_wait = max_total_wait

    def __call__(self, retry_state: RetryCallState) -> bool:
        """Return whether to stop retrying."""
        return retry_state.idle_for + (retry_state.upcoming_sleep or 0.0) > self.max_total_wait


class ApiClient:
    """A DigitalOcean API client bound to one origin and one token for one run."""

    def __init__(
        self,
        *,
        base_url: str,
        token: str,
        timeout: float = 30.0,
        max_attempts: int = 6,
        max_retry_wait: float = 120.0,
        max_total_wait: float = 600.0,
        min_ratelimit_remaining: int = 0,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        limiter: RateLimiter | None = None,
        stop: threading.Event | None = None,
        sleep: Callable[[float], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._origin = urlsplit(self.base_url)[:2]
        self._timeout = timeout
        self._max_retry_wait = max_retry_wait
        self._min_remaining = min_ratelimit_remaining
        self._max_response_bytes = max_response_bytes
        self._limiter = limiter
        self._stop = stop or threading.Event()
        self._sleep = sleep or self._stop.wait  # a stop ends a retry's wait at once
        self._clock = clock
        self._token = token
        self._token_bytes = token.encode() if token else b"\x00no-token"
        self._watchdog = Watchdog(self._stop)
        self.stats = ClientStats()
        self._headers = {
            "Authorization": f"Bearer {token}",
            "User-Agent": USER_AGENT,
            "Accept": "application/json",
        }
        # One session (one connection pool) per worker thread: requests' sessions are not
        # documented as thread-safe. Counters are shared, under a lock.
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()
        self._answered = threading.Condition(self._lock)
        self._in_flight = 0
        self._first_answer = False
        self._probe: int | None = None  # the thread whose call is the run's probe
        self._refused: AuthError | None = None
        self._unreachable: ApiUnreachableError | None = None
        self._retrying = Retrying(
            retry=retry_if_exception_type(TRANSIENT_ERRORS),
            wait=self._wait,
            stop=stop_after_attempt(max_attempts) | stop_when_waits_exceed(max_total_wait),
            sleep=self._pause,
            before_sleep=self._before_sleep,
            reraise=True,  # callers see the real error, not tenacity.RetryError
        )
        self._backoff = wait_exponential(multiplier=BACKOFF_MULTIPLIER, max=max_retry_wait)

    @property
    def thread_requests(self) -> int:
        """Return the requests made so far by the calling thread (one worker)."""
        return int(getattr(self._local, "requests", 0))

    @property
    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = new_session(self._headers)
            with self._lock:
                self._sessions.append(session)
        return session

    def url_for(self, path: str) -> str:
        """Return the absolute URL of an API path such as ``/v2/images``."""
        return self.base_url + path

    def get_json(self, url: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Return the JSON object at ``url`` (absolute, on our origin), retrying transient faults.

        Raises:
            ApiError: see get_answer.
        """
        body = self.get_answer(url, params).body
        if body is None:  # cannot happen: no known fingerprint was given
            raise ApiError(f"GET {urlsplit(url).path} gave no body")
        return body

    def get_answer(
        self,
        url: str,
        params: Mapping[str, Any] | None = None,
        *,
        known_digest: str | None = None,
    ) -> Answer:
        """Return the JSON object at ``url`` and a fingerprint of its bytes.

        When the bytes match ``known_digest`` the body is not parsed (see Answer).

        Raises:
            ApiError: the origin is foreign, the status is fatal, or retries ran out.
            ApiUnreachableError: the network failed on every attempt.
        """
        if urlsplit(url)[:2] != self._origin:
            raise ApiError(
                f"refusing to request {urlsplit(url).netloc or url}: only {self.base_url} "
                "may receive the token"
            )
        me = threading.get_ident()
        with self._answered:
            # The run's first call is a probe: until the API has answered once, the other
            # workers wait for its outcome, so a refused token or a dead API costs one
            # call (with its retries), and the budget is known before any burst.
            while self._probe not in (None, me) and not self._first_answer:
                self._answered.wait()
            if self._probe is None and not self._first_answer:
                self._probe = me
        try:
            answer: Answer = self._retrying.copy()(self._get_once, url, params, known_digest)
        except (requests.ConnectionError, requests.Timeout) as exc:
            kind = "timed out" if isinstance(exc, requests.Timeout) else "could not connect"
            error = ApiUnreachableError(
                f"the API at {self.base_url} {kind} on every attempt "
                f"({type(exc).__name__}); check api_url and the network, then run again",
                url=urlsplit(url).path,
            )
            with self._lock:
                self._unreachable = self._unreachable or error
            raise error from None
        except requests.RequestException as exc:  # a body cut off on every attempt, say
            raise ApiError(
                f"GET {urlsplit(url).path} failed on every attempt ({type(exc).__name__})",
                url=urlsplit(url).path,
            ) from None
        finally:
            if self._probe == me:
                with self._answered:
                    self._probe = None
                    self._answered.notify_all()
        return answer

    def close(self) -> None:
        """Close every worker's HTTP session and its pooled connections."""
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()
        self._watchdog.close()

    def _pause(self, seconds: float) -> None:
        """Wait before a retry; a stop ends the wait and the request."""
        self._sleep(seconds)
        if self._stop.is_set():
            raise RunInterrupted("the run was asked to stop")

    def _check_budget(self) -> None:
        """Claim a request from the hourly budget, or defer the run when it is nearly spent.

        Requests in flight count as spent: their answers will lower ratelimit-remaining.

        Raises:
            DeferredError: the budget left is below min_ratelimit_remaining.
        """
        if self._stop.is_set():
            raise RunInterrupted("the run was asked to stop")
        with self._answered:
            if self._refused is not None:  # a refused token is refused for every worker
                raise AuthError(str(self._refused), status=self._refused.status)
            if self._unreachable is not None:  # so is an API that is down
                raise ApiUnreachableError(str(self._unreachable))
            remaining = self.stats.ratelimit_remaining
            if remaining is None or remaining - self._in_flight >= self._min_remaining:
                self._in_flight += 1
                return
            remaining -= self._in_flight
        reset = self.stats.ratelimit_reset
        frees = (
            f"; it frees up from {datetime.fromtimestamp(reset, UTC):%H:%M:%S} UTC"
            if reset is not None
            else ""
        )
        raise DeferredError(
            f"the hourly API budget is nearly spent (ratelimit-remaining {remaining} is below "
            f"min_ratelimit_remaining {self._min_remaining}); stopping before any 429{frees}, "
            "and the next run carries on"
        )

    def _get_once(
        self, url: str, params: Mapping[str, Any] | None, known_digest: str | None = None
    ) -> Answer:
        self._check_budget()
        refused: AuthError | None = None
        paced = False
        try:
            if self._limiter is not None:
                self._limiter.acquire()
                paced = True
            response, body = self._exchange(url, params)
            self._note_rate_limit(response.headers, response.status_code)
            return self._read(response, body, known_digest)
        except AuthError as exc:
            refused = exc
            raise
        finally:
            with self._answered:
                self._in_flight -= 1
                self._refused = self._refused or refused
                self._answered.notify_all()
            if paced:
                self._limiter.release()  # type: ignore[union-attr]

    def _exchange(
        self, url: str, params: Mapping[str, Any] | None
    ) -> tuple[requests.Response, bytes]:
        """Send one GET (following same-path redirects) and read its body within the limits.

        Raises:
            RedirectRefusedError: a redirect leaves the path or the origin, or loops.
            ResponseTooLargeError: the body passed max_response_bytes.
            RetryableApiError: the body was cut short or is not decodable.
            requests.Timeout: the request passed its deadline (``timeout``, all included).
        """
        path = urlsplit(url).path
        for _ in range(MAX_REDIRECTS + 1):
            self._local.requests = self.thread_requests + 1
            with self._lock:
                self.stats.requests += 1
            with self._watchdog.guard(self._timeout) as slot:
                try:
                    response = self._session.get(
                        url,
                        params=params,
                        timeout=self._timeout,
                        stream=True,
                        allow_redirects=False,
                    )
                    with self._answered:
                        self._first_answer = True  # the API answered: the probe's work is done
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
        target = urljoin(url, location)
        here, there = urlsplit(url), urlsplit(target)
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
        except BodyTooLarge:
            response.close()
            raise ResponseTooLargeError(
                f"GET {path} sent more than max_response_bytes={self._max_response_bytes} "
                "bytes (as sent or once inflated); refusing it",
                url=path,
            ) from None
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

    def _read(
        self, response: requests.Response, content: bytes, known_digest: str | None = None
    ) -> Answer:
        """Return the JSON object of a 200 and its fingerprint, or raise what the status means."""
        parts = urlsplit(response.url)
        where = parts.path + (f"?{parts.query}" if parts.query else "")
        if response.status_code == 200:
            digest = hashlib.blake2b(content, digest_size=16).hexdigest()
            if digest == known_digest:
                return Answer(None, digest)  # the very bytes parsed before: valid JSON
            body = parse_json(content)
            if body is None:
                raise RetryableApiError(
                    f"GET {where} answered 200 with a body that is not complete JSON",
                    status=200,
                    url=where,
                )
            if not isinstance(body, dict):
                raise ApiError(f"GET {where} answered with JSON that is not an object", url=where)
            return Answer(body, digest)
        detail, error_id, request_id = _error_detail(response, content)
        detail = self.redact(detail)
        suffix = f" [request_id {request_id}]" if request_id else ""
        status = response.status_code
        if status in RETRYABLE_STATUSES:
            raise RetryableApiError(
                f"GET {where} failed ({detail}){suffix}",
                status=status,
                url=where,
                request_id=request_id,
                wait_hint=self._wait_hint(response),
            )
        if status == 401:
            raise AuthError(
                f"the API refused the token ({detail}){suffix}; check that the token is valid "
                "and not expired",
                status=status,
                url=where,
                request_id=request_id,
            )
        if status == 403:
            raise AuthError(
                f"the token may not read {where} ({detail}){suffix}; give it the image:read scope",
                status=status,
                url=where,
                request_id=request_id,
            )
        # Only the API's own "not_found" says a resource is gone: a 404 page from a proxy
        # or a wrong api_url must never mark images gone.
        error = NotFoundError if status == 404 and error_id == "not_found" else ApiError
        hint = "; check api_url" if status == 404 and error is ApiError else ""
        raise error(
            f"GET {where} failed ({detail}){suffix}{hint}",
            status=status,
            url=where,
            request_id=request_id,
        )

    def _note_rate_limit(self, headers: Mapping[str, str], status: int) -> None:
        remaining = _header_number(headers, "ratelimit-remaining")
        if status == 429 and _header_number(headers, "retry-after") is not None:
            # The per-minute limit: waiting retry-after is the whole cure, and the hourly
            # budget it may report says nothing about whether to defer the run.
            remaining = None
        limit = _header_number(headers, "ratelimit-limit")
        reset = _header_number(headers, "ratelimit-reset")
        with self._lock:
            stats = self.stats
            if remaining is not None:
                # Answers to concurrent requests arrive in any order: within one window
                # (same reset) the lowest remaining is the truest.
                same_window = reset is None or reset == stats.ratelimit_reset
                known = stats.ratelimit_remaining
                lowest = min(known, int(remaining)) if known is not None and same_window else None
                stats.ratelimit_remaining = int(remaining) if lowest is None else lowest
            if reset is not None:
                stats.ratelimit_reset = reset
            if limit is not None:
                stats.ratelimit_limit = int(limit)
        if limit is not None and self._limiter is not None:
            self._limiter.lower_hourly_limit(int(limit))

    def _wait_hint(self, response: requests.Response) -> float | None:
        """Return how long the server asked us to wait, if it said so."""
        retry_after = _header_number(response.headers, "retry-after")
        if retry_after is not None:
            return max(retry_after, 0.0)
        if response.status_code == 429:
            # An hourly 429 has no retry-after: the budget frees up at ratelimit-reset.
            reset = _header_number(response.headers, "ratelimit-reset")
            if reset is not None:
                return max(reset - self._clock(), 0.0)
        return None

    def _wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        hint = error.wait_hint if isinstance(error, RetryableApiError) else None
        if hint is not None:
            return min(hint, self._max_retry_wait)
        return float(self._backoff(state))

    @property
    def rate_limit_wait(self) -> float:
        """Return the seconds spent waiting on rate limits: 429s and our own pacing."""
        paced = self._limiter.waited if self._limiter is not None else 0.0
        return self.stats.rate_limit_wait + paced

    def _before_sleep(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        with self._lock:
            self.stats.retries += 1
            if isinstance(error, RetryableApiError) and error.status == 429:
                self.stats.rate_limit_wait += wait
        logger.warning(
            "attempt %d failed (%s); retrying in %.1f s", state.attempt_number, error, wait
        )
