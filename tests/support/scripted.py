"""The fake API with the misbehaviour tests script: faults, lies in meta.total, odd links.

The shipped fake (etl/fake) serves a World as the real API does; everything hostile lives
here, as a subclass that overrides its ``respond`` and ``answer`` hooks.
"""

from __future__ import annotations

import gzip
import json
import re
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable
from typing import Any

from etl.fake import FakeApi, World
from etl.fake.server import Exchange, Request, error_body
from tests.support.faults import Fault, FaultPlan

ACTIONS_PATH = re.compile(r"^/v2/images/(\d+)/actions$")
NOT_JSON = b"<html><body>502 Bad Gateway</body></html>"


def gzip_of_zeros(size: int) -> bytes:
    """Return a gzip stream that inflates to ``size`` zero bytes (a decompression bomb)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(1024 * 1024)
    parts = [
        packer.compress(block[: min(len(block), size - done)])
        for done in range(0, size, len(block))
    ]
    return b"".join([*parts, packer.flush()])


class ScriptedApi(FakeApi):
    """A FakeApi that misbehaves on request: scripted ``faults``, a random ``plan``, lies."""

    def __init__(self, world: World, **options: Any) -> None:
        super().__init__(world, **options)
        self.faults: deque[Fault] = deque()
        self.plan = FaultPlan()
        self.total_override: dict[int, int] = {}  # a lie told in meta.total only
        self.feed_hides: set[int] = set()  # actions the account feed leaves out (a miss)
        # (image_id, page, per_page, base_url) -> the next link to send instead, or None.
        self.next_link_override: Callable[[int, int, int, str], str | None] | None = None
        self._faults_lock = threading.Lock()

    def take_fault(self, path: str) -> Fault | None:
        """Pop the first scripted fault that applies to ``path``, else draw a random one."""
        with self._faults_lock:
            for fault in self.faults:
                if path.startswith(fault.path):
                    if fault.skip > 0:
                        fault.skip -= 1
                        return None
                    self.faults.remove(fault)
                    return fault
            return self.plan.draw(time.time())

    def shift_pages(self, path: str, query: dict[str, str]) -> None:
        """Push new actions to an image's head before a later page, as live data does."""
        match = ACTIONS_PATH.match(path)
        if match and query.get("page", "1") != "1" and int(match[1]) in self.world.actions:
            with self._faults_lock:
                count = self.plan.shift()
            if count:
                self.world.add_actions(int(match[1]), count)

    def answer(self, path: str, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """Answer as the fake does, then tell the lies the test asked for."""
        status, body = super().answer(path, query)
        match = ACTIONS_PATH.match(path)
        if match is None or status != 200:
            return status, body
        image_id = int(match[1])
        if image_id in self.total_override:
            body["meta"] = {"total": self.total_override[image_id]}
        if self.next_link_override is not None:
            page, per_page = self._paging(query)
            link = self.next_link_override(image_id, page, per_page, self.url)
            if link is not None:
                body["links"] = {"pages": {"next": link}}
        return status, body

    def _feed(self, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if not self.feed_hides:
            return super()._feed(query)
        page, per_page = self._paging(query)
        actions, total = self.world.feed(page, per_page, hidden=frozenset(self.feed_hides))
        body: dict[str, Any] = {"actions": actions}
        body.update(self._links("/v2/actions", page, per_page, total, {}))
        body["meta"] = {"total": total}
        return 200, body

    def respond(self, exchange: Exchange, request: Request) -> int:
        """Answer with the next fault that applies, or as the fake does."""
        fault = self.take_fault(request.path)
        if fault is None:
            self.shift_pages(request.path, request.query)
            return super().respond(exchange, request)
        return self._misbehave(exchange, request, fault)

    def _misbehave(self, exchange: Exchange, request: Request, fault: Fault) -> int:
        headers = request.headers
        kind = fault.kind
        if kind == "status":
            exchange.send_json(fault.status, error_body(fault.status), {**headers, **fault.headers})
            return fault.status
        if kind == "reset":
            exchange.close_connection = True
            return 0
        if kind == "redirect":  # a body only when the fault gives one (a bomb, say)
            body = gzip_of_zeros(fault.size) if fault.size else fault.body
            extra = {"Content-Encoding": "gzip"} if fault.size else {}
            extra.update(fault.headers, Location=fault.location)
            exchange.send_raw(fault.status, body, {**headers, **extra})
            return fault.status
        if kind == "raw":
            exchange.send_head(
                fault.status, len(fault.body), {**headers, **fault.headers}, reason=fault.reason
            )
            exchange.wfile.write(fault.body)
            return fault.status
        if kind == "echo":  # an error page that quotes what it was sent
            quoted = f"bad request: Authorization: {request.authorization}"
            echo = {"id": "bad_request", "message": quoted, "request_id": "fake-echo"}
            exchange.send_json(fault.status, echo, headers)
            return fault.status
        if kind == "bomb":
            exchange.send_raw(
                200, gzip_of_zeros(fault.size), {**headers, "Content-Encoding": "gzip"}
            )
            return 200
        if kind == "not_json":
            exchange.send_raw(200, NOT_JSON, headers, "text/html")
            return 200
        if not request.authorized:
            return super().respond(exchange, request)
        if kind == "stall":
            time.sleep(fault.seconds)
            return super().respond(exchange, request)
        return self._mangle(exchange, request, fault)

    def _mangle(self, exchange: Exchange, request: Request, fault: Fault) -> int:
        """Send the real page, mangled as ``fault`` says."""
        status, body = self.answer(request.path, request.query)
        payload = json.dumps(body).encode()
        headers = request.headers
        if fault.kind == "truncated":  # the real page, cut off mid-body
            exchange.send_head(status, len(payload), headers)
            exchange.wfile.write(payload[: len(payload) // 2])
            exchange.close_connection = True
        elif fault.kind == "drip":  # a byte at a time: no single read times out
            exchange.send_head(status, len(payload), headers)
            try:
                for index in range(len(payload)):
                    exchange.wfile.write(payload[index : index + 1])
                    exchange.wfile.flush()
                    time.sleep(fault.seconds)
            except OSError:  # the client gave up, as it should
                exchange.close_connection = True
        elif fault.kind == "gzip":
            exchange.send_raw(
                status, gzip.compress(payload), {**headers, "Content-Encoding": "gzip"}
            )
        elif fault.kind == "headers":  # the real page with odd headers
            exchange.send_raw(status, payload, {**headers, **fault.headers})
        else:
            raise ValueError(f"unknown fault kind {fault.kind!r}")
        return status
