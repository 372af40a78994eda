"""The page helper: a process that prepares pages beside the run (``python -m etl.sync.helper``).

It reads requests from its stdin and answers on its stdout, one at a time and in order:
each a length-prefixed pickle, a request ``(content, image_id, options)`` for prepare_page
and an answer ``(True, PreparedPage)``, or ``(False, reason)`` when preparing raised. It
exits at the end of its input: when the run's process closes it, or dies.

It never sees the token (the run starts it without it), imports nothing of SQLAlchemy or
requests, and runs in its own session, so a Ctrl-C in a terminal reaches the run alone,
which stops, then closes it.
"""

from __future__ import annotations

import pickle
import struct
import sys
from typing import IO, Any

from etl.sync.prepare import prepare_page

HEADER = struct.Struct("!Q")  # each message's length
READY = b"ready\n"  # the helper's first words: it has imported what it needs


def encode_message(value: object) -> bytes:
    """Return ``value`` as one length-prefixed pickle."""
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(data)) + data


def read_message(stream: IO[bytes]) -> object:
    """Read one length-prefixed pickle; raise EOFError at the end of the stream."""
    header = stream.read(HEADER.size)
    if len(header) < HEADER.size:
        raise EOFError("the stream ended")
    (size,) = HEADER.unpack(header)
    data = stream.read(size)
    if len(data) < size:
        raise EOFError("the stream ended within a message")
    return pickle.loads(data)  # noqa: S301  (the run's own process wrote it)


def serve(requests: IO[bytes], answers: IO[bytes]) -> None:
    """Answer every request on ``requests`` until it ends."""
    answers.write(READY)
    answers.flush()
    while True:
        try:
            request: Any = read_message(requests)
        except EOFError:
            return
        content, image_id, options = request
        try:  # a bug, or a page nested too deep to pickle: the run prepares it itself
            message = encode_message((True, prepare_page(content, image_id, **options)))
        except Exception as exc:
            message = encode_message((False, f"{type(exc).__name__}: {exc}"[:300]))
        try:
            answers.write(message)
            answers.flush()
        except OSError:  # the run has gone
            return


if __name__ == "__main__":
    serve(sys.stdin.buffer, sys.stdout.buffer)
