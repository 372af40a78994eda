"""A fake DigitalOcean API: a real HTTP server on 127.0.0.1 that pages a World."""

from __future__ import annotations

import gzip
import json
import math
import re
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from etl.fake.faults import Fault, FaultPlan
from etl.fake.world import World

DEFAULT_PER_PAGE = 20  # what the real API gives when per_page is not sent
MAX_PER_PAGE = 200
HOUR = 3600.0
MINUTE = 60.0

ACTIONS_PATH = re.compile(r"^/v2/images/(\d+)/actions$")
ACTION_PATH = re.compile(r"^/v2/images/(\d+)/actions/(\d+)$")
IMAGES_PATH = "/v2/images"

JSON = "application/json"
HOSTILE = frozenset({"redirect", "raw", "echo", "bomb"})


def _gzip_of_zeros(size: int) -> bytes:
    """Return a gzip stream that inflates to ``size`` zero bytes (a decompression bomb)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(1024 * 1024)
    parts = [
        packer.compress(block[: min(len(block), size - done)])
        for done in range(0, size, len(block))
    ]
    return b"".join([*parts, packer.flush()])


# How the last page says "no more pages": every shape the real API (or a proxy) may send.
LAST_PAGE_SHAPES = ("first_prev", "absent", "empty_links", "no_pages", "empty_pages")


@dataclass
class Served:
    """What the fake saw of one request."""

    path: str
    query: dict[str, str]
    authorized: bool
    status: int


ERROR_IDS = {
    401: ("unauthorized", "Unable to authenticate you."),
    403: ("forbidden", "You do not have access for the attempted action."),
    404: ("not_found", "The resource you requested could not be found."),
    429: ("too_many_requests", "API rate limit exceeded."),
    500: ("server_error", "Server was unable to give you a response."),
}


class FakeApi:
    """Serve a World over HTTP the way api.digitalocean.com does, with faults on request."""

    def __init__(
        self,
        world: World,
        *,
        token: str = "fake-token",  # noqa: S107  (loopback only)
        latency: float = 0.0,
        hourly_limit: int = 5000,
        minute_limit: int = 250,
        enforce_limits: bool = False,
        minute_window: float = MINUTE,
    ) -> None:
        self.world = world
        self.token = token
        self.latency = latency
        self.hourly_limit = hourly_limit
        self.minute_limit = minute_limit
        self.enforce_limits = enforce_limits
        self.minute_window = minute_window  # tests shrink "a minute" to keep runs short
        self.faults: deque[Fault] = deque()
        self.served: list[Served] = []
        self.last_page_shape = "first_prev"
        self.newest_first = True  # the API's order is undocumented; False lists oldest first
        # Hooks for hostile paging: (image_id, page, per_page, base_url) -> next link or None.
        self.next_link_override: Callable[[int, int, int, str], str | None] | None = None
        self.total_override: dict[int, int] = {}
        self.plan = FaultPlan()
        self._stamps: deque[float] = deque()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.fake = self  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Return the base URL, e.g. http://127.0.0.1:41234."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeApi:
        """Start serving in a background thread and return self."""
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeApi:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def requests_to(self, prefix: str) -> list[Served]:
        """Return the served requests whose path starts with ``prefix``."""
        return [entry for entry in self.served if entry.path.startswith(prefix)]

    # -- called by the handler thread --------------------------------------------------

    def take_fault(self, path: str) -> Fault | None:
        """Pop the first scripted fault that applies to ``path``, else draw a random one."""
        with self._lock:
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
            with self._lock:
                count = self.plan.shift()
            if count:
                self.world.add_actions(int(match[1]), count)

    def rate_headers(self, now: float) -> tuple[dict[str, str], bool, bool]:
        """Count this request; return rate headers and whether a minute/hour limit is hit."""
        with self._lock:
            while self._stamps and self._stamps[0] <= now - HOUR:
                self._stamps.popleft()
            in_minute = sum(1 for stamp in self._stamps if stamp > now - self.minute_window)
            minute_hit = in_minute >= self.minute_limit
            hour_hit = len(self._stamps) >= self.hourly_limit
            if not (self.enforce_limits and (minute_hit or hour_hit)):
                self._stamps.append(now)
            oldest = self._stamps[0] if self._stamps else now
            headers = {
                "ratelimit-limit": str(self.hourly_limit),
                "ratelimit-remaining": str(max(self.hourly_limit - len(self._stamps), 0)),
                "ratelimit-reset": str(math.ceil(oldest + HOUR)),
            }
            return headers, minute_hit, hour_hit

    def answer(self, path: str, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """Return the status and JSON body for an authorized GET."""
        if match := ACTIONS_PATH.match(path):
            return self._list_actions(int(match[1]), query)
        if match := ACTION_PATH.match(path):
            return self._one_action(int(match[1]), int(match[2]))
        if path == IMAGES_PATH:
            return self._list_images(query)
        return 404, error_body(404)

    def _paging(self, query: dict[str, str]) -> tuple[int, int]:
        page = max(int(query.get("page", "1") or 1), 1)
        per_page = min(max(int(query.get("per_page", DEFAULT_PER_PAGE) or 1), 1), MAX_PER_PAGE)
        return page, per_page

    def _links(
        self, path: str, page: int, per_page: int, total: int, query: dict[str, str]
    ) -> dict[str, Any]:
        last = max(math.ceil(total / per_page), 1)

        def link(number: int) -> str:
            return f"{self.url}{path}?{urlencode({**query, 'page': number, 'per_page': per_page})}"

        pages: dict[str, str] = {}
        if page > 1:
            pages.update(first=link(1), prev=link(min(page - 1, last)))
        if page < last:
            pages.update(next=link(page + 1), last=link(last))
        if page >= last:
            shape = self.last_page_shape
            if shape == "absent":
                return {}
            if shape == "empty_links":
                return {"links": {}}
            if shape == "no_pages":
                return {"links": {"actions": []}}  # links without pages
            if shape == "empty_pages":
                return {"links": {"pages": {}}}
        return {"links": {"pages": pages}}

    def _list_actions(self, image_id: int, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if image_id not in self.world.actions:
            return 404, error_body(404)
        page, per_page = self._paging(query)
        actions, total = self.world.page(image_id, page, per_page, newest_first=self.newest_first)
        body: dict[str, Any] = {"actions": actions}
        body.update(self._links(f"/v2/images/{image_id}/actions", page, per_page, total, {}))
        total = self.total_override.get(image_id, total)  # a lie told in meta.total only
        if self.next_link_override is not None:
            link = self.next_link_override(image_id, page, per_page, self.url)
            if link is not None:
                body["links"] = {"pages": {"next": link}}
        body["meta"] = {"total": total}
        return 200, body

    def _one_action(self, image_id: int, action_id: int) -> tuple[int, dict[str, Any]]:
        with self.world.lock:
            for action in self.world.actions.get(image_id, []):
                if action["id"] == action_id:
                    return 200, {"action": dict(action)}
        return 404, error_body(404)

    def _list_images(self, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        page, per_page = self._paging(query)
        with self.world.lock:
            images = list(self.world.images.values())
        chosen = images[(page - 1) * per_page : page * per_page]
        body: dict[str, Any] = {"images": chosen}
        body.update(self._links(IMAGES_PATH, page, per_page, len(images), {"private": "true"}))
        body["meta"] = {"total": len(images)}
        return 200, body


def error_body(status: int) -> dict[str, Any]:
    """Return the DigitalOcean error body for ``status``."""
    error_id, message = ERROR_IDS.get(status, ("server_error", "Unexpected failure."))
    return {"id": error_id, "message": message, "request_id": f"fake-{status}-req"}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real API, so sessions reuse sockets
    # Headers and body go out as two writes; with Nagle on, the client's delayed ACK
    # stalls every answer by ~40 ms.
    disable_nagle_algorithm = True
    server: ThreadingHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: the tests and the demo read their own output."""

    def do_GET(self) -> None:
        fake: FakeApi = self.server.fake  # type: ignore[attr-defined]
        parts = urlsplit(self.path)
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        authorized = self.headers.get("Authorization") == f"Bearer {fake.token}"
        if fake.latency:
            time.sleep(fake.latency)
        headers, minute_hit, hour_hit = fake.rate_headers(time.time())
        fault = fake.take_fault(parts.path)
        served = Served(parts.path, query, authorized, 0)
        with fake._lock:
            fake.served.append(served)
        kind = fault.kind if fault is not None else None
        if fault is not None and kind == "status":
            status = fault.status
            self._send_json(status, error_body(status), {**headers, **fault.headers})
        elif kind == "reset":
            status, self.close_connection = 0, True
        elif kind in HOSTILE:
            status = self._send_hostile(fault, headers)  # type: ignore[arg-type]
        elif not authorized:
            status = 401
            self._send_json(401, error_body(401), headers)
        elif fake.enforce_limits and (minute_hit or hour_hit):
            status = 429
            if minute_hit:
                headers["retry-after"] = "1"
            self._send_json(429, error_body(429), headers)
        elif kind == "not_json":
            status = 200
            self._send_raw(200, b"<html><body>502 Bad Gateway</body></html>", headers, "text/html")
        else:
            if fault is not None and kind == "stall":
                time.sleep(fault.seconds)
            fake.shift_pages(parts.path, query)
            status, body = fake.answer(parts.path, query)
            payload = json.dumps(body).encode()
            if kind == "truncated":  # the real page, cut off mid-body
                self._send_head(status, len(payload), headers, "application/json")
                self.wfile.write(payload[: len(payload) // 2])
                self.close_connection = True
            elif kind == "drip":  # the real page, a byte at a time: no single read times out
                self._send_head(status, len(payload), headers, "application/json")
                self._drip(payload, fault.seconds)  # type: ignore[union-attr]
            elif kind == "gzip":
                packed = gzip.compress(payload)
                self._send_raw(status, packed, {**headers, "Content-Encoding": "gzip"}, JSON)
            elif kind == "headers":  # the real page with odd headers
                self._send_raw(status, payload, {**headers, **fault.headers}, JSON)  # type: ignore[union-attr]
            else:
                self._send_raw(status, payload, headers, "application/json")
        served.status = status

    def _send_hostile(self, fault: Fault, headers: dict[str, str]) -> int:
        if fault.kind == "redirect":  # a body only when the fault gives one (a bomb, say)
            body = _gzip_of_zeros(fault.size) if fault.size else fault.body
            extra = {"Content-Encoding": "gzip"} if fault.size else {}
            extra.update(fault.headers, Location=fault.location)
            self._send_raw(fault.status, body, {**headers, **extra}, JSON)
        elif fault.kind == "raw":
            self._reason = fault.reason
            self._send_raw(fault.status, fault.body, {**headers, **fault.headers}, JSON)
        elif fault.kind == "echo":  # an error page that quotes what it was sent
            quoted = f"bad request: Authorization: {self.headers.get('Authorization')}"
            echo = {"id": "bad_request", "message": quoted, "request_id": "fake-echo"}
            self._send_json(fault.status, echo, headers)
        elif fault.kind == "bomb":
            packed = _gzip_of_zeros(fault.size)
            self._send_raw(200, packed, {**headers, "Content-Encoding": "gzip"}, JSON)
        return fault.status if fault.kind != "bomb" else 200

    def _drip(self, payload: bytes, seconds: float) -> None:
        try:
            for index in range(len(payload)):
                self.wfile.write(payload[index : index + 1])
                self.wfile.flush()
                time.sleep(seconds)
        except OSError:  # the client gave up, as it should
            self.close_connection = True

    def _send_head(self, status: int, length: int, headers: dict[str, str], kind: str) -> None:
        self.send_response(status, getattr(self, "_reason", None) or None)
        self._reason = ""
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(length))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()

    def _send_json(self, status: int, body: dict[str, Any], headers: dict[str, str]) -> None:
        self._send_raw(status, json.dumps(body).encode(), headers, "application/json")

    def _send_raw(self, status: int, payload: bytes, headers: dict[str, str], kind: str) -> None:
        self._send_head(status, len(payload), headers, kind)
        self.wfile.write(payload)
