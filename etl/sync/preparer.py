"""Where a run's pages are prepared: in the helper process beside it, or in its own threads.

A sync that reads whole listings is bound to one core by the GIL. On a machine with a core
to spare, the helper process (etl.sync.helper) parses and transforms the pages
(etl.sync.prepare) while the run's threads fetch and write. One helper is started per
process, at its first run, and kept for the next. Whatever becomes of it (it cannot start,
it dies, it fails a page), the run prepares the pages itself: same rows, more time.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import select
import subprocess
import sys
import threading
import time
from collections import deque
from concurrent.futures import Future
from typing import IO, Any, cast

from etl.config import TOKEN_ENV
from etl.errors import RunInterrupted
from etl.sync.helper import READY, encode_message, read_message
from etl.sync.prepare import PreparedPage, prepare_page

logger = logging.getLogger(__name__)

# A page takes the helper milliseconds; one that takes this long means it is stopped or
# stuck (a SIGSTOP, a machine out of memory), and the run prepares its pages itself.
ANSWER_TIMEOUT = 60.0
STOP_CHECK = 0.1  # a wait for an answer looks at the run's stop this often
PIPE_SIZE = 1 << 20  # what the helper's input holds: Linux's default limit for anyone


class HelperGone(Exception):
    """The helper process could not start, or ended."""


def spare_cores() -> int:
    """Return how many cores this process may run on beyond one."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(cores - 1, 0)


def widen_pipe(fd: int, size: int = PIPE_SIZE) -> None:
    """Let the pipe ``fd`` hold ``size`` bytes, where Linux allows it; else leave it.

    A page (90 KB and more) is larger than a pipe holds by default (64 KiB): its write
    would stop halfway and wait for the helper to read, once a page, in every worker.
    """
    try:
        import fcntl  # not on Windows
    except ImportError:
        return
    setting = getattr(fcntl, "F_SETPIPE_SZ", None)  # Linux only
    if setting is not None:
        with contextlib.suppress(OSError):  # past /proc/sys/fs/pipe-max-size: as it is
            fcntl.fcntl(fd, setting, size)


class Helper:
    """The run's side of the helper process: calls answered in the order they were sent."""

    def __init__(self) -> None:
        self.pid = os.getpid()  # a forked child starts its own
        # Started without the token (it needs none), in its own session: a terminal's
        # Ctrl-C is the run's to handle.
        env = {name: value for name, value in os.environ.items() if name != TOKEN_ENV}
        self._process = subprocess.Popen(
            [sys.executable, "-m", "etl.sync.helper"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        self._requests = cast(IO[bytes], self._process.stdin)
        self._input = self._requests.fileno()  # written by _send, never blocking
        os.set_blocking(self._input, False)
        widen_pipe(self._input)
        self._answers = cast(IO[bytes], self._process.stdout)
        # An answer (100 KB and more) whole, too: else the helper waits halfway through
        # each for the run's reader, which waits for the GIL, before it takes the next page.
        widen_pipe(self._answers.fileno())
        self._sending = threading.RLock()  # also held while the calls waiting are failed
        self._waiting: deque[Future[Any]] = deque()
        self.alive = True
        self._reader = threading.Thread(target=self._read, name="helper-answers", daemon=True)
        self._reader.start()

    def call(
        self,
        content: bytes,
        image_id: int,
        options: dict[str, Any],
        stop: threading.Event | None = None,
    ) -> PreparedPage:
        """Return prepare_page's answer from the helper.

        Raises:
            HelperGone: the helper is not running, failed the page, or gave no answer in
                ANSWER_TIMEOUT seconds (it is killed then).
            RunInterrupted: ``stop`` was set while waiting.
        """
        request = encode_message((content, image_id, options))  # nothing is sent if it fails
        future: Future[Any] = Future()
        deadline = time.monotonic() + ANSWER_TIMEOUT
        with self._sending:
            if not self.alive:
                raise HelperGone("the process that prepares pages beside the run has ended")
            self._waiting.append(future)  # before the write: its answer may come at once
            try:
                self._send(request, stop, deadline)
            except BaseException as exc:
                # Half a request may have gone: no later answer could be matched to its call.
                self._kill()
                if isinstance(exc, RunInterrupted) or not isinstance(exc, Exception):
                    raise
                raise HelperGone(f"a page could not be sent ({type(exc).__name__})") from exc
        while True:
            try:
                done, answer = future.result(timeout=STOP_CHECK)
                break
            except TimeoutError:
                if stop is not None and stop.is_set():
                    raise RunInterrupted("the run was asked to stop") from None
                if time.monotonic() > deadline:  # stopped, or stuck: the run goes on without it
                    self._kill()
                    raise HelperGone(f"the helper gave no answer in {ANSWER_TIMEOUT:g} s") from None
        if not done:
            raise HelperGone(f"the helper failed a page ({answer})")
        return cast(PreparedPage, answer)

    def _send(self, data: bytes, stop: threading.Event | None, deadline: float) -> None:
        """Write ``data`` to the helper's input, which is non-blocking (see __init__).

        A page is larger than a pipe holds: a helper that does not read (stopped, stuck)
        would hold a blocking write, and the run's stop with it, for ever.

        Raises:
            RunInterrupted: ``stop`` was set while the helper did not read.
            TimeoutError: the helper read nothing until ``deadline``.
        """
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self._input, view) :]
            except BlockingIOError:
                select.select([], [self._input], [], STOP_CHECK)
                if stop is not None and stop.is_set():
                    raise RunInterrupted("the run was asked to stop") from None
                if time.monotonic() > deadline:
                    raise TimeoutError("the helper read no more of a page") from None

    def _kill(self) -> None:
        with contextlib.suppress(OSError):
            self._process.kill()
        self._end()

    def _read(self) -> None:
        try:
            if self._answers.read(len(READY)) != READY:
                raise EOFError("the helper did not start")
            while True:
                answer = read_message(self._answers)
                self._waiting.popleft().set_result(answer)
        except Exception:
            self._end()
        finally:  # the helper has gone, or is going: its input ends it
            self._answers.close()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def _end(self) -> None:
        with self._sending:
            self.alive = False
            while self._waiting:
                self._waiting.popleft().set_exception(HelperGone("the helper process ended"))
            with contextlib.suppress(OSError):
                self._requests.close()

    def peak_rss_kib(self) -> int | None:
        """Return the helper's peak resident memory so far, where Linux's /proc says it."""
        try:
            with open(f"/proc/{self._process.pid}/status", encoding="ascii") as status:
                return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
        except (OSError, StopIteration, ValueError, IndexError):
            return None

    def close(self) -> None:
        """End the helper: it exits at the end of its input, or is killed soon after.

        (A process forked from this one holds its input open as well.)
        """
        self._end()
        try:
            self._process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self._kill()
        self._reader.join(timeout=10)


_helper: Helper | None = None
_helper_lock = threading.Lock()


def shared_helper() -> Helper | None:
    """Return the process's helper, started on first use; None when it cannot start."""
    global _helper
    with _helper_lock:
        if _helper is None or not _helper.alive or _helper.pid != os.getpid():
            try:
                _helper = Helper()
            except OSError as exc:
                logger.info("no helper process (%s); pages are prepared in the run", exc)
                return None
        return _helper


def shared_helper_peak_rss_kib() -> int | None:
    """Return the peak resident memory of the process's helper, if it has one (see Helper)."""
    helper = _helper
    return None if helper is None else helper.peak_rss_kib()


@atexit.register
def close_shared_helper() -> None:
    """End the process's helper, if it started one (also at the interpreter's exit)."""
    global _helper
    with _helper_lock:
        helper, _helper = _helper, None
    if helper is not None and helper.pid == os.getpid():
        helper.close()


class Preparer:
    """Prepares one run's pages in its dialect's bulk writer's form (see etl.ready.FORMS)."""

    def __init__(
        self,
        *,
        form: str,
        max_depth: int | None,
        helper: bool,
        stop: threading.Event | None = None,
    ) -> None:
        """``helper``: prepare pages in the helper process, started at the first page.

        ``stop``: the run's stop (see Coordinator): a wait for the helper ends with it.
        """
        self.form = form
        self.max_depth = max_depth
        self._stop = stop
        self._use_helper = helper
        self._helper: Helper | None = None
        self._warned = False

    def start(self) -> None:
        """Start the helper now (its start-up overlaps the run's), rather than at the first page."""
        if self._use_helper and self._helper is None:
            self._helper = shared_helper()

    def page(self, content: bytes, image_id: int, *, read_only: bool = False) -> PreparedPage:
        """Return a page's bytes read and prepared (see prepare_page)."""
        options: dict[str, Any] = {
            "form": self.form,
            "max_depth": self.max_depth,
            "read_only": read_only,
        }
        if self._use_helper and self._helper is None:
            self._helper = shared_helper()  # an incremental run may never need it
        helper = self._helper
        if helper is not None:
            try:
                return helper.call(content, image_id, options, self._stop)
            except HelperGone as exc:
                if not self._warned:
                    self._warned = True
                    logger.warning("%s; the run prepares its pages itself, more slowly", exc)
        return prepare_page(content, image_id, **options)
