"""Read what the API answered: the JSON of a 200, the meaning of any other status."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests

from etl.errors import ApiError, AuthError, NotFoundError, RetryableApiError
from etl.source.gate import RateLimits
from etl.source.reading import NOT_JSON, NOT_OBJECT, parse_json, shape_of

# 429 is the rate-limit answer; 5xx are transient server faults (501 is not: it never heals).
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Answer:
    """A 200's JSON object and a fingerprint of the bytes it came in.

    ``body`` is None when the bytes matched the known fingerprint the caller passed:
    they were parsed before, so they are not parsed again.
    """

    body: dict[str, Any] | None
    digest: str
    prepared: Any = None  # what the caller's ``prepare`` made of the bytes, instead of body


def _header_number(headers: Mapping[str, str], name: str) -> float | None:
    """Return a header as a finite, non-negative number, or None for anything else."""
    value = headers.get(name)  # requests' headers are case-insensitive
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def _error_detail(
    response: requests.Response, content: bytes, redact: Callable[[str], str]
) -> tuple[str, str | None, str | None]:
    """Return 'status id: message', the error id and the request id of an error response.

    Each text is redacted before it is cut short, so no part of a token survives.
    """
    body = parse_json(content)

    def text(value: Any, limit: int) -> str:
        return redact(value)[:limit] if isinstance(value, str) else ""

    if isinstance(body, dict):
        error_id, message = text(body.get("id"), 60), text(body.get("message"), 200)
        detail = f"{response.status_code} {error_id}: {message}".strip()
        return detail, error_id or None, text(body.get("request_id"), 80) or None
    return f"{response.status_code} {text(response.reason, 60)}", None, None


def rate_limits(headers: Mapping[str, str], status: int) -> RateLimits:
    """Return the rate-limit headers of an answer.

    ``remaining`` is None for a 429 with retry-after: that is the per-minute limit,
    and the hourly budget it may report says nothing about whether to defer the run.
    """
    remaining = _header_number(headers, "ratelimit-remaining")
    if status == 429 and _header_number(headers, "retry-after") is not None:
        remaining = None  # the per-minute limit: waiting retry-after is the whole cure
    limit = _header_number(headers, "ratelimit-limit")
    return RateLimits(
        remaining=None if remaining is None else int(remaining),
        limit=int(limit) if limit is not None and limit >= 1 else None,
        reset=_header_number(headers, "ratelimit-reset"),
    )


def wait_hint(response: requests.Response, clock: Callable[[], float]) -> float | None:
    """Return how long the server asked us to wait, if it said so."""
    retry_after = _header_number(response.headers, "retry-after")
    if retry_after is not None:
        return max(retry_after, 0.0)
    if response.status_code == 429:
        # An hourly 429 has no retry-after: the budget frees up at ratelimit-reset.
        reset = _header_number(response.headers, "ratelimit-reset")
        if reset is not None:
            return max(reset - clock(), 0.0)
    return None


def _redacted(body: dict[str, Any], redact: Callable[[str], str]) -> dict[str, Any]:
    """Return ``body`` with the token blanked out of every string, keys included."""
    try:
        text = json.dumps(body, ensure_ascii=False)
    except RecursionError as exc:
        raise ApiError("a page is nested too deeply to check it for the token") from exc
    clean = redact(text)
    return body if clean == text else dict(json.loads(clean))


def _check_shape(shape: int, where: str) -> None:
    """Raise what a 200's body means when it is no JSON object (see etl.source.reading)."""
    if shape == NOT_JSON:
        raise RetryableApiError(
            f"GET {where} answered 200 with a body that is not complete JSON",
            status=200,
            url=where,
        )
    if shape == NOT_OBJECT:
        raise ApiError(f"GET {where} answered with JSON that is not an object", url=where)


def read_answer(
    response: requests.Response,
    content: bytes,
    *,
    known_digest: str | None,
    redact: Callable[[str], str],
    clock: Callable[[], float],
    fingerprint: bool = True,
    prepare: Callable[[bytes, str], Any] | None = None,
) -> Answer:
    """Return the JSON object of a 200 and its fingerprint, or raise what the status means.

    ``prepare`` reads the bytes instead, given them and their fingerprint (see
    etl.sync.prepare): its ``shape`` says whether they were a JSON object; when it
    answers None they are parsed here after all. Bytes holding any backslash escape,
    which may spell the token, are parsed here to be redacted, and ``prepare`` is not
    called.

    Without ``fingerprint`` (and no ``known_digest``) the digest is left empty: hashing a
    page costs about as much as parsing it.

    Raises:
        RetryableApiError: a retryable status, or a 200 that is not complete JSON.
        AuthError: 401 or 403.
        NotFoundError: the API's own 404 (its error id is ``not_found``).
        ApiError: any other status, or JSON that is not an object.
    """
    parts = urlsplit(response.url)
    where = parts.path + (f"?{parts.query}" if parts.query else "")
    if response.status_code == 200:
        wanted = fingerprint or known_digest is not None
        digest = hashlib.blake2b(content, digest_size=16).hexdigest() if wanted else ""
        if digest == known_digest:
            return Answer(None, digest)  # the very bytes parsed before: valid JSON
        # Any escape may spell part of the token (a \u escape, \/) past the byte redaction.
        escaped = b"\\" in content
        prepared = prepare(content, digest) if prepare is not None and not escaped else None
        if prepared is not None:
            _check_shape(prepared.shape, where)
            return Answer(None, digest, prepared)
        body = parse_json(content)
        _check_shape(shape_of(body), where)
        if escaped:
            body = _redacted(body, redact)
        return Answer(body, digest)
    detail, error_id, request_id = _error_detail(response, content, redact)
    suffix = f" [request_id {request_id}]" if request_id else ""
    status = response.status_code
    if status in RETRYABLE_STATUSES:
        raise RetryableApiError(
            f"GET {where} failed ({detail}){suffix}",
            status=status,
            url=where,
            request_id=request_id,
            wait_hint=wait_hint(response, clock),
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
