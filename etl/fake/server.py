"""A fake DigitalOcean API: a real HTTP server on 127.0.0.1 that pages a World."""

from __future__ import annotations

import json
import math
import re
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from etl.fake.world import World

DEFAULT_PER_PAGE = 20  # what the real API gives when per_page is not sent
MAX_PER_PAGE = 200
HOUR = 3600.0
MINUTE = 60.0

ACTIONS_PATH = re.compile(r"^/v2/images/(\d+)/actions$")
ACTION_PATH = re.compile(r"^/v2/images/(\d+)/actions/(\d+)$")
IMAGES_PATH = "/v2/images"
FEED_PATH = "/v2/actions"  # the account's action feed: every resource, newest first
FEED_ACTION_PATH = re.compile(r"^/v2/actions/(\d+)$")

JSON = "application/json"

# How the last page says "no more pages": every shape the real API (or a proxy) may send.
LAST_PAGE_SHAPES = ("first_prev", "absent", "empty_links", "no_pages", "empty_pages")


@dataclass
class Request:
    """One GET as the fake sees it, with the rate-limit headers its answer carries."""

    path: str
    query: dict[str, str]
    authorized: bool
    authorization: str | None
    headers: dict[str, str]  # ratelimit-* for the answer
    minute_hit: bool
    hour_hit: bool


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
    """Serve a World over HTTP the way api.digitalocean.com does.

    ``respond`` answers one request: a subclass (the tests' scripted fake) overrides it,
    or ``answer``, to misbehave.
    """

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
        self.served: list[Served] = []
        self.last_page_shape = "first_prev"
        self.newest_first = True  # the API's order is undocumented; False lists oldest first
        self.lock = threading.Lock()  # guards served and the rate-limit stamps
        self._stamps: deque[float] = deque()
        self._server = _QuietServer(("127.0.0.1", 0), Exchange)
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

    def rate_headers(self, now: float) -> tuple[dict[str, str], bool, bool]:
        """Count this request; return rate headers and whether a minute/hour limit is hit."""
        with self.lock:
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

    def respond(self, exchange: Exchange, request: Request) -> int:
        """Answer one GET as the real API would, and return the status sent."""
        if not request.authorized:
            exchange.send_json(401, error_body(401), request.headers)
            return 401
        if self.enforce_limits and (request.minute_hit or request.hour_hit):
            headers = dict(request.headers)
            if request.minute_hit:  # the per-minute limit says when to come back
                headers["retry-after"] = "1"
            exchange.send_json(429, error_body(429), headers)
            return 429
        status, body = self.answer(request.path, request.query)
        exchange.send_json(status, body, request.headers)
        return status

    def answer(self, path: str, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """Return the status and JSON body for an authorized GET."""
        if match := ACTIONS_PATH.match(path):
            return self._list_actions(int(match[1]), query)
        if match := ACTION_PATH.match(path):
            return self._one_action(int(match[1]), int(match[2]))
        if path == IMAGES_PATH:
            return self._list_images(query)
        if path == FEED_PATH:
            return self._feed(query)
        if match := FEED_ACTION_PATH.match(path):
            found = self.world.find_any(int(match[1]))
            return (200, {"action": dict(found)}) if found else (404, error_body(404))
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
        body["meta"] = {"total": total}
        return 200, body

    def _one_action(self, image_id: int, action_id: int) -> tuple[int, dict[str, Any]]:
        with self.world.lock:
            for action in self.world.actions.get(image_id, []):
                if action["id"] == action_id:
                    return 200, {"action": dict(action)}
        return 404, error_body(404)

    def _feed(self, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        page, per_page = self._paging(query)
        actions, total = self.world.feed(page, per_page)
        body: dict[str, Any] = {"actions": actions}
        body.update(self._links(FEED_PATH, page, per_page, total, {}))
        body["meta"] = {"total": total}
        return 200, body

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


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet when a client hangs up mid-answer, as clients that give up do."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class Exchange(BaseHTTPRequestHandler):
    """One connection's requests: reads a GET, hands it to the fake, sends what it says."""

    protocol_version = "HTTP/1.1"  # keep-alive, like the real API, so sessions reuse sockets
    # Headers and body go out as two writes; with Nagle on, the client's delayed ACK
    # stalls every answer by ~40 ms.
    disable_nagle_algorithm = True
    server: ThreadingHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: the tests and the demo read their own output."""

    def do_GET(self) -> None:
        """Answer a GET through the fake, and note what was served."""
        fake: FakeApi = self.server.fake  # type: ignore[attr-defined]
        parts = urlsplit(self.path)
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        authorization = self.headers.get("Authorization")
        if fake.latency:
            time.sleep(fake.latency)
        headers, minute_hit, hour_hit = fake.rate_headers(time.time())
        request = Request(
            parts.path,
            query,
            authorization == f"Bearer {fake.token}",
            authorization,
            headers,
            minute_hit,
            hour_hit,
        )
        served = Served(parts.path, query, request.authorized, 0)
        with fake.lock:
            fake.served.append(served)
        served.status = fake.respond(self, request)

    def send_head(
        self, status: int, length: int, headers: dict[str, str], kind: str = JSON, reason: str = ""
    ) -> None:
        """Send the status line and headers of an answer of ``length`` bytes."""
        self.send_response(status, reason or None)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(length))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()

    def send_json(self, status: int, body: Any, headers: dict[str, str]) -> None:
        """Send ``body`` as JSON."""
        self.send_raw(status, json.dumps(body).encode(), headers)

    def send_raw(
        self, status: int, payload: bytes, headers: dict[str, str], kind: str = JSON
    ) -> None:
        """Send ``payload`` as it is."""
        self.send_head(status, len(payload), headers, kind)
        self.wfile.write(payload)
