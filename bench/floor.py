"""The floor: fetch and JSON-parse the same pages with one session, then one bulk upsert."""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime

import requests

from bench.serve import TOKEN
from etl.source.transform import flatten_action
from etl.store.database import open_engine
from etl.store.load import upsert_statement


def main() -> None:
    """Print the floor's timings as JSON."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--api-url", required=True)
    parser.add_argument("--images", required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--per-page", type=int, default=200)
    args = parser.parse_args()
    images = [int(image) for image in args.images.split(",")]

    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {TOKEN}"
    pages: list[tuple[int, list[dict]]] = []
    requests_made = 0
    started = time.perf_counter()
    for image in images:
        page = 1
        while True:
            body = session.get(
                f"{args.api_url}/v2/images/{image}/actions",
                params={"page": page, "per_page": args.per_page},
                timeout=30,
            ).json()
            requests_made += 1
            pages.append((image, body["actions"]))
            if "next" not in body.get("links", {}).get("pages", {}):
                break
            page += 1
    fetched = time.perf_counter() - started

    now = datetime.now(UTC)
    rows = [
        {**flatten_action(action, image_id=image), "first_seen_at": now, "changed_at": now}
        for image, actions in pages
        for action in actions
    ]  # not timed: the floor has no transform
    engine = open_engine(args.database_url)
    started = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(upsert_statement(engine.dialect.name), rows)
    upserted = time.perf_counter() - started
    engine.dispose()
    print(json.dumps({"fetch": fetched, "upsert": upserted, "requests": requests_made,
                      "rows": len(rows)}))  # fmt: skip


if __name__ == "__main__":
    main()
