"""The exception classes: one root, a leaf per kind of deliberate failure."""

from __future__ import annotations


class EtlError(Exception):
    """Root of every deliberate failure in etl."""


class ConfigError(EtlError):
    """A setting is missing or invalid; raised before any request is made."""


class ApiError(EtlError):
    """The API answered with something we cannot use."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        url: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.url = url
        self.request_id = request_id


class RetryableApiError(ApiError):
    """A transient API fault (rate limit, 5xx, broken body) that is worth retrying."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        url: str | None = None,
        request_id: str | None = None,
        wait_hint: float | None = None,
    ) -> None:
        super().__init__(message, status=status, url=url, request_id=request_id)
        self.wait_hint = wait_hint


class ApiUnreachableError(ApiError):
    """The API could not be reached (connection refused, timeouts) even after retries."""


class AuthError(ApiError):
    """The token was refused (401) or lacks the needed scope (403): no image can be synced."""


class NotFoundError(ApiError):
    """The API answered 404 for a resource we asked for by id."""


class PaginationError(ApiError):
    """The API's paging cannot be followed safely (foreign link, loop, runaway)."""


class TransformError(EtlError):
    """An API action cannot be turned into a row."""


class DatabaseError(EtlError):
    """The database refused or lost a statement, or its schema is not ours."""


class LockedOutError(EtlError):
    """Another sync holds the database's sync lock."""


class DeferredError(EtlError):
    """The hourly request budget is nearly spent; the run stops and the next carries on."""


class ResponseTooLargeError(ApiError):
    """A response's body, as sent or once inflated, passed max_response_bytes."""


class RedirectRefusedError(ApiError):
    """The API redirected a request off the path it was sent to, or off the API's origin."""


class RunInterrupted(EtlError):
    """A signal (SIGTERM, SIGINT) asked the run to stop: no new request is made."""


class TooManyRejectedError(EtlError):
    """More actions were rejected in one run than max_rejected allows."""
