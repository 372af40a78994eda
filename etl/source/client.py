"""The only module that speaks HTTP: session, auth, timeouts, retries and rate-limit headers."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

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
    RetryableApiError,
    RunInterrupted,
)
from etl.source.answers import Answer, rate_limits, read_answer
from etl.source.exchange import MAX_RESPONSE_BYTES, Exchanger
from etl.source.gate import Gate, OpenGate, RateLimits

logger = logging.getLogger(__name__)

USER_AGENT = f"do-image-actions/{__version__}"
# Network faults and bodies cut short are as transient as a 503.
TRANSIENT_ERRORS = (
    RetryableApiError,
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)
BACKOFF_MULTIPLIER = 0.5  # first backoff 0.5 s, then 1, 2, 4 ... up to max_retry_wait


@dataclass
class ClientStats:
    """What the client spent: requests made, retries, seconds slept on 429s, last limits."""

    requests: int = 0
    retries: int = 0
    rate_limit_wait: float = 0.0
    ratelimit_remaining: int | None = None
    ratelimit_limit: int | None = None
    ratelimit_reset: float | None = None
    by_kind: Counter[str] = field(default_factory=Counter)  # see request_kind


# What a request was for, by its path: how a run's requests are counted.
_KINDS = (
    (re.compile(r"^/v2/actions$"), "feed_pages"),
    (re.compile(r"^/v2/images/\d+/actions$"), "image_pages"),
    (re.compile(r"^/v2/(images/\d+/)?actions/\d+$"), "single_actions"),
    (re.compile(r"^/v2/images$"), "image_list_pages"),
)


def request_kind(path: str) -> str:
    """Return what a request to ``path`` was for (``other`` for anything else)."""
    for pattern, kind in _KINDS:
        if pattern.match(path):
            return kind
    return "other"


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
    """A DigitalOcean API client bound to one origin and one token: HTTP and nothing else.

    It sends, reads within limits, classifies and retries; whatever spans the workers of a
    run (who may send, when, and whether the run goes on) is the ``gate``'s to decide.
    """

    def __init__(
        self,
        *,
        base_url: str,
        token: str,
        timeout: float = 30.0,
        max_attempts: int = 6,
        max_retry_wait: float = 120.0,
        max_total_wait: float = 600.0,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        gate: Gate | None = None,
        sleep: Callable[[float], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._origin = urlsplit(self.base_url)[:2]
        self._max_retry_wait = max_retry_wait
        self._gate: Gate = gate or OpenGate()
        self._stop = self._gate.stop
        self._sleep = sleep or self._stop.wait  # a stop ends a retry's wait at once
        self._clock = clock
        self.stats = ClientStats()
        self._local = threading.local()  # the calling worker's own request count
        self._lock = threading.Lock()  # the stats are shared by every worker
        self._http = Exchanger(
            base_url=self.base_url,
            headers={
                "Authorization": f"Bearer {token}",
                "User-Agent": USER_AGENT,
                "Accept": "application/json",
            },
            token=token,
            timeout=timeout,
            max_response_bytes=max_response_bytes,
            stop=self._stop,
            on_request=self._count,
        )
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
        fingerprint: bool = True,
        prepare: Callable[[bytes, str], Any] | None = None,
    ) -> Answer:
        """Return the JSON object at ``url`` and a fingerprint of its bytes.

        When the bytes match ``known_digest`` the body is not parsed (see Answer). Without
        ``fingerprint`` the digest is computed only to compare with ``known_digest``.
        ``prepare`` reads the bytes instead of the client (see read_answer).

        Raises:
            ApiError: the origin is foreign, the status is fatal, or retries ran out.
            ApiUnreachableError: the network failed on every attempt.
            RunInterrupted: the gate's stop was set.
        """
        if urlsplit(url)[:2] != self._origin:
            raise ApiError(
                f"refusing to request {urlsplit(url).netloc or url}: only {self.base_url} "
                "may receive the token"
            )
        self._gate.open_call()
        error: BaseException | None = None
        try:
            answer: Answer = self._retrying.copy()(
                self._get_once, url, params, known_digest, fingerprint, prepare
            )
        except (requests.ConnectionError, requests.Timeout) as exc:
            kind = "timed out" if isinstance(exc, requests.Timeout) else "could not connect"
            error = ApiUnreachableError(
                f"the API at {self.base_url} {kind} on every attempt "
                f"({type(exc).__name__}); check api_url and the network, then run again",
                url=urlsplit(url).path,
            )
            raise error from exc
        except requests.RequestException as exc:  # a body cut off on every attempt, say
            error = ApiError(
                f"GET {urlsplit(url).path} failed on every attempt ({type(exc).__name__})",
                url=urlsplit(url).path,
            )
            raise error from exc
        except BaseException as exc:
            error = exc
            raise
        finally:
            self._gate.close_call(error)
        return answer

    def close(self) -> None:
        """Close every worker's HTTP session and its pooled connections."""
        self._http.close()

    def redact(self, text: str) -> str:
        """Return ``text`` with the token blanked out."""
        return self._http.redact(text)

    def _count(self, path: str) -> None:
        self._local.requests = self.thread_requests + 1
        with self._lock:
            self.stats.requests += 1
            self.stats.by_kind[request_kind(path)] += 1

    def _pause(self, seconds: float) -> None:
        """Wait before a retry; a stop ends the wait and the request."""
        self._sleep(seconds)
        if self._stop.is_set():
            raise RunInterrupted("the run was asked to stop")

    def _get_once(
        self,
        url: str,
        params: Mapping[str, Any] | None,
        known_digest: str | None = None,
        fingerprint: bool = True,
        prepare: Callable[[bytes, str], Any] | None = None,
    ) -> Answer:
        if self._stop.is_set():
            raise RunInterrupted("the run was asked to stop")
        self._gate.open_attempt()
        limits: RateLimits | None = None
        try:
            response, body = self._http.get(url, params)
            limits = rate_limits(response.headers, response.status_code)
            with self._lock:
                self.stats.ratelimit_remaining = limits.remaining
                self.stats.ratelimit_limit = limits.limit or self.stats.ratelimit_limit
                self.stats.ratelimit_reset = limits.reset or self.stats.ratelimit_reset
            return read_answer(
                response,
                body,
                known_digest=known_digest,
                redact=self.redact,
                clock=self._clock,
                fingerprint=fingerprint,
                prepare=prepare,
            )
        finally:
            self._gate.close_attempt(limits)

    def _wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        hint = error.wait_hint if isinstance(error, RetryableApiError) else None
        if hint is not None:
            return min(hint, self._max_retry_wait)
        return float(self._backoff(state))

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
