"""Compare this checkout's syncs with another's by interleaving their runs.

python -m bench.compare ../other-checkout                  # SQLite and PostgreSQL, 3 each
python -m bench.compare ../other-checkout --dialects sqlite --reps 5

This machine's speed drifts by 10-20% over an hour, so two versions timed an hour apart
differ by more than most changes do. Here each repetition runs, for each checkout in turn,
a first sync of 100,000 actions (200 images x 500) into a fresh database (migrated by that
checkout), an incremental sync and a --full sync over the same, unchanged data, against
one fake API; the table gives the min and median of the syncs' own clocks. Make the other
checkout with `git worktree add ../base REV`.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from bench.run import database, fake_api, sync
from etl.ops.tables import format_table

HERE = Path(__file__).resolve().parents[1]
KINDS = ("first sync", "incremental", "--full unchanged")


def main() -> None:
    """Run the interleaved syncs and print one table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("other", type=Path, help="the other checkout's root")
    parser.add_argument("--dialects", default="sqlite,postgresql")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    sources = {"this": HERE, "other": args.other.resolve()}
    if not (sources["other"] / "bench" / "measure.py").is_file():
        parser.error(f"{args.other} is not a checkout of this project with bench/measure.py")
    seconds: dict[tuple[str, str, str], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="dia-compare-") as tmp, fake_api(200, 500) as fake:
        for _ in range(args.reps):
            for dialect in args.dialects.split(","):
                for name, source in sources.items():
                    with database(dialect, Path(tmp), source) as url:
                        first = sync(fake, url, source=source)["seconds"]
                        incremental = sync(fake, url, source=source)["seconds"]
                        again = sync(fake, url, full=True, source=source)["seconds"]
                    seconds.setdefault((dialect, KINDS[0], name), []).append(first)
                    seconds.setdefault((dialect, KINDS[1], name), []).append(incremental)
                    seconds.setdefault((dialect, KINDS[2], name), []).append(again)
    rows = []
    for dialect in args.dialects.split(","):
        for kind in KINDS:
            cells = [dialect, kind]
            for name in sources:
                found = seconds[(dialect, kind, name)]
                cells.append(f"{min(found):.2f} / {statistics.median(found):.2f}")
            rows.append(cells)
    print(f"min / median of {args.reps} interleaved runs; seconds on the sync's own clock")
    print(format_table(rows, ["database", "sync", f"this ({HERE})", f"other ({sources['other']})"]))


if __name__ == "__main__":
    main()
