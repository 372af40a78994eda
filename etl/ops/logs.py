"""Set up logging on stderr, as text for people or JSON lines for log shippers, secrets blanked."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Fields a log call may pass with extra={...}; JSON lines carry them beside the message.
STRUCTURED_FIELDS = ("run_id", "image_id", "page", "requests")


class RedactingFormatter(logging.Formatter):
    """A formatter that blanks out secrets wherever they appear, tracebacks included."""

    def __init__(self, fmt: str | None, secrets: Sequence[str]) -> None:
        super().__init__(fmt)
        self._secrets = [secret for secret in secrets if secret]

    def redact(self, text: str) -> str:
        """Return ``text`` with every secret replaced by ***."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def format(self, record: logging.LogRecord) -> str:
        """Format the record, then replace every secret with ***."""
        return self.redact(super().format(record))


class JsonFormatter(RedactingFormatter):
    """One JSON object per line: time, level, logger, message, fields, exception.

    The fields are the STRUCTURED_FIELDS a log call passed with ``extra=``; a field it did
    not pass (or passed as None) is absent.
    """

    def format(self, record: logging.LogRecord) -> str:
        """Return the record as a JSON line, secrets blanked."""
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": self.redact(record.getMessage()),
        }
        for name in STRUCTURED_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                entry[name] = self.redact(value) if isinstance(value, str) else value
        if record.exc_info:
            entry["exception"] = self.redact(self.formatException(record.exc_info))
        # Redacted before encoding too: JSON escapes could spell a secret differently.
        return self.redact(json.dumps(entry, ensure_ascii=False))


def setup_logging(verbosity: int, secrets: Sequence[str] = (), log_format: str = "text") -> None:
    """Log to stderr: warnings with -q, info by default, debug (libraries too) with -v."""
    level = {-1: logging.WARNING, 0: logging.INFO}.get(verbosity, logging.DEBUG)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter(None, secrets)
        if log_format == "json"
        else RedactingFormatter(TEXT_FORMAT, secrets)
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if level == logging.DEBUG else logging.WARNING)
    logging.getLogger("etl").setLevel(level)
    # SQLAlchemy at debug logs every statement with its parameters: our users' data.
    logging.getLogger("sqlalchemy").setLevel(logging.WARNING)
    # The pool logs, traceback and all, a connection it could not reset or close (its server
    # gone); it drops that connection itself, and the run says in one sentence what failed.
    logging.getLogger("sqlalchemy.pool").setLevel(
        logging.DEBUG if level == logging.DEBUG else logging.CRITICAL
    )
    # Alembic registers its plugins when first imported, which now happens mid-command.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
