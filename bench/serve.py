"""Serve a generated world from the fake API in its own process; print the URL, then wait."""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import threading
from typing import Any

from etl.fake import FakeApi, World
from etl.fake.server import ACTIONS_PATH, HOUR, MAX_PER_PAGE, Exchange, Request

TOKEN = "bench-token"  # noqa: S105  (the fake API on loopback)
PAGE_QUERY = frozenset({"page", "per_page"})  # what a page request may carry to be prebuilt


class PrebuiltFakeApi(FakeApi):
    """The fake, answering image-action pages from bytes encoded once per world version.

    The world holds still during a benchmark, so ``prebuild`` encodes every page a run asks
    for before the URL is printed; serving one is then a lookup and a write, and the
    benchmark measures the sync rather than the fake's json.dumps. Call ``prebuild`` again
    after changing the world, ``newest_first`` or ``last_page_shape``. Anything not prebuilt
    (another per_page, the feed, errors, 429s) takes the normal path.
    """

    def __init__(self, world: World, **options: Any) -> None:
        super().__init__(world, **options)
        self.pages: dict[tuple[int, int, int], bytes] = {}
        self.full_page_sizes: list[int] = []  # bytes of the pages that hold per_page actions
        self.prebuilt_served = 0
        self._count_lock = threading.Lock()

    def prebuild(self, per_page: int = MAX_PER_PAGE) -> None:
        """Encode every page of every image's actions at ``per_page``, as the fake would."""
        for image_id, listed in self.world.actions.items():
            query = {"per_page": str(per_page)}
            for page in range(1, max(math.ceil(len(listed) / per_page), 1) + 1):
                path = f"/v2/images/{image_id}/actions"
                status, body = self.answer(path, {**query, "page": str(page)})
                if status != 200:
                    continue
                payload = json.dumps(body).encode()  # what Exchange.send_json sends
                self.pages[(image_id, page, per_page)] = payload
                if len(body["actions"]) == per_page:
                    self.full_page_sizes.append(len(payload))

    def respond(self, exchange: Exchange, request: Request) -> int:
        """Send a prebuilt page when there is one and nothing else is due; else as ever."""
        limited = self.enforce_limits and (request.minute_hit or request.hour_hit)
        payload = self._prebuilt(request.path, request.query)
        if payload is None or limited or not request.authorized:
            return super().respond(exchange, request)
        with self._count_lock:  # counted before sending: a client may look as soon as it reads
            self.prebuilt_served += 1
        exchange.send_raw(200, payload, request.headers)
        return 200

    def rate_headers(self, now: float) -> tuple[dict[str, str], bool, bool]:
        """Count this request; skip the per-minute count when no limit is enforced.

        Counting the minute walks every stamp of the past hour; over a benchmark's
        thousands of requests that walk, not the answer, would be the fake's main cost.
        """
        if self.enforce_limits:
            return super().rate_headers(now)
        with self.lock:
            stamps = self._stamps
            while stamps and stamps[0] <= now - HOUR:
                stamps.popleft()
            stamps.append(now)
            headers = {
                "ratelimit-limit": str(self.hourly_limit),
                "ratelimit-remaining": str(max(self.hourly_limit - len(stamps), 0)),
                "ratelimit-reset": str(math.ceil(stamps[0] + HOUR)),
            }
        return headers, False, len(stamps) > self.hourly_limit

    def _prebuilt(self, path: str, query: dict[str, str]) -> bytes | None:
        match = ACTIONS_PATH.match(path)
        if match is None or not query.keys() <= PAGE_QUERY:
            return None
        try:
            page, per_page = self._paging(query)
        except ValueError:  # not a number: the normal path answers as it does
            return None
        return self.pages.get((int(match[1]), page, per_page))


def main() -> None:
    """Serve until stdin closes."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, required=True)
    parser.add_argument("--actions", type=int, required=True)
    parser.add_argument("--region-scale", type=int, default=1)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--minute-limit", type=int, default=0, help="enforce N a minute")
    args = parser.parse_args()
    world = World.generate(
        images=args.images, actions_per_image=args.actions, seed=1, region_scale=args.region_scale
    )
    api = PrebuiltFakeApi(
        world,
        token=TOKEN,
        latency=args.latency,
        # Zero-latency scenarios measure CPU, not the budget: the fake then has none to spend.
        hourly_limit=5000 if args.minute_limit else 10**9,
        minute_limit=args.minute_limit or 10**9,
        enforce_limits=bool(args.minute_limit),
    )
    api.prebuild()
    page_kb = statistics.median(api.full_page_sizes or [0]) / 1000
    with api:
        ids = ",".join(str(image) for image in world.images)
        print(api.url, ids, f"{page_kb:.1f}", flush=True)
        sys.stdin.read()  # the benchmark closes our stdin to stop us
        statuses = [entry.status for entry in api.served]
        print(f"served {len(statuses)} requests ({api.prebuilt_served} prebuilt), "
              f"{statuses.count(429)} of them 429", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
