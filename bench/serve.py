"""Serve a generated world from the fake API in its own process; print the URL, then wait."""

from __future__ import annotations

import argparse
import sys

from etl.fake import FakeApi, World

TOKEN = "bench-token"  # noqa: S105  (the fake API on loopback)


def main() -> None:
    """Serve until stdin closes."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, required=True)
    parser.add_argument("--actions", type=int, required=True)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--minute-limit", type=int, default=0, help="enforce N a minute")
    args = parser.parse_args()
    world = World.generate(images=args.images, actions_per_image=args.actions, seed=1)
    api = FakeApi(
        world,
        token=TOKEN,
        latency=args.latency,
        # Zero-latency scenarios measure CPU, not the budget: the fake then has none to spend.
        hourly_limit=5000 if args.minute_limit else 10**9,
        minute_limit=args.minute_limit or 10**9,
        enforce_limits=bool(args.minute_limit),
    )
    with api:
        print(api.url, ",".join(str(image) for image in world.images), flush=True)
        sys.stdin.read()  # the benchmark closes our stdin to stop us
        statuses = [entry.status for entry in api.served]
        print(f"served {len(statuses)} requests, {statuses.count(429)} of them 429", flush=True)


if __name__ == "__main__":
    main()
