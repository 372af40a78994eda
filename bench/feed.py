"""Count what the account feed saves: requests per run over 1,000 images, and its safety nets.

python -m bench.feed            # about a minute; prints one table of exact request counts

Counts, not timings: the fake API runs in this process and every run is run_sync itself.
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy import select

from etl.config import Settings
from etl.fake import FakeApi, World
from etl.ops.tables import format_table
from etl.store.database import open_engine
from etl.store.schema import image_actions
from etl.sync.results import RunResult
from etl.sync.run import run_sync

TOKEN = "bench-feed-token"  # noqa: S105  (loopback only)
BOOKKEEPING = ("first_seen_at", "changed_at")


class MissingFeed(FakeApi):
    """The fake, with actions left out of the account feed: a feed that misses some."""

    hides: frozenset[int] = frozenset()

    def _feed(self, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        page, per_page = self._paging(query)
        actions, total = self.world.feed(page, per_page, hidden=self.hides)
        body: dict[str, Any] = {
            "actions": actions,
            **self._links("/v2/actions", page, per_page, total, {}),
        }
        body["meta"] = {"total": total}
        return 200, body


def table(url: str) -> list[dict[str, Any]]:
    """Return every stored action, bookkeeping aside."""
    engine = open_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(image_actions).order_by(image_actions.c.id))
            return [{k: v for k, v in r._mapping.items() if k not in BOOKKEEPING} for r in rows]
    finally:
        engine.dispose()


def main() -> None:
    """Run the scenario and print its counts."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--actions", type=int, default=20)
    args = parser.parse_args()
    world = World.generate(images=args.images, actions_per_image=args.actions, others_per_action=2)
    world.finish_all()
    folder = Path(tempfile.mkdtemp(prefix="bench-feed-"))
    url = f"sqlite:///{folder / 'feed.db'}"
    rows: list[list[Any]] = []
    audit = max(math.ceil(args.images / 288), 1)

    with MissingFeed(world, token=TOKEN) as api:
        settings = Settings(
            database_url=url,
            api_url=api.url,
            images=tuple(world.actions),
            token=TOKEN,
            rate_limit_per_minute=10**9,
            rate_limit_per_hour=10**9,
        )

        def run(note: str, target: str = "", **changes: Any) -> RunResult:
            result = run_sync(Settings(**{**settings.__dict__, **changes}))
            kinds = result.requests_by_kind()
            rows.append([note, result.outcome, result.strategy, result.requests,
                         kinds["feed_pages"], kinds["image_pages"], kinds["single_actions"],
                         kinds["audit_requests"], kinds["image_list_pages"], target])  # fmt: skip
            return result

        run("first run (no watermark)")
        run("idle run", f"<= 1 + {audit}")
        run("idle run, --all-images", f"<= 1 + {audit} + {math.ceil(args.images / 200)}",
            images=(), all_images=True)  # fmt: skip
        touched = list(world.actions)[: args.images // 20]
        for image in touched:
            world.add_actions(image, 2)
        run("after a change to 5% of the images")
        world.finish_all()
        run("the same actions finished")
        full_url = f"sqlite:///{folder / 'full.db'}"
        run_sync(Settings(**{**settings.__dict__, "database_url": full_url}), full=True)
        same = table(url) == table(full_url)
        rows.append(["table equals a --full run's", str(same), "", "", "", "", "", "", "", "True"])
        audited: set[int] = set()
        for _ in range(288):
            idle = run_sync(settings)
            audited.update(image.image_id for image in idle.images if image.audit)
        rows.append([f"288 idle runs: images audited of {args.images}", len(audited), "", "", "",
                     "", "", "", "", str(args.images)])  # fmt: skip
        hour = [run_sync(settings) for _ in range(12)]
        rows.append(["an hour of 5-minute idle runs: requests", sum(r.requests for r in hour),
                     "", "", "", "", "", "", "", "< 200"])  # fmt: skip
        victim = list(world.actions)[args.images // 2]
        api.hides = frozenset(action["id"] for action in world.add_actions(victim, 1))
        count = 0
        while count < 2 * 288:
            count += 1
            found = run_sync(settings)
            if any(image.feed_miss for image in found.images):
                break
        rows.append(["a feed miss: runs until the audit found it", count, "", "", "", "", "",
                     "", "", "<= 288"])  # fmt: skip
        api.hides = frozenset()
    columns = ["run", "outcome", "strategy", "requests", "feed", "image pages", "singles",
               "audits", "image list", "target"]  # fmt: skip
    print(format_table(rows, columns))


if __name__ == "__main__":
    main()
