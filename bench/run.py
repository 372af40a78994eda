"""Benchmark full and incremental syncs against a measured floor; print one table.

python -m bench.run                       # every scenario, 3 repetitions, medians
python -m bench.run --scenario 100k --dialects sqlite --reps 1

The floor (bench.floor) is measured in the same run, on the same fake and the same kind of
fresh database: the cheapest fetch of the same pages, and the cheapest upsert of their rows.
Each repetition measures its own floor just before and just after each sync it is
compared with (the fetch alone before and after a --full run) and divides the sync by
their mean, and ``x floor`` is the median of the repetitions' own ratios: this machine's
speed drifts by 10-20% within minutes, which a ratio of two medians taken minutes apart
carries whole, and one floor taken before a sync carries half of.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bench.serve import TOKEN
from etl.ops.tables import format_table
from etl.store.database import open_engine
from etl.store.migrate import upgrade

SERVERS = {
    "postgresql": os.environ.get(
        "DO_IMAGE_ACTIONS_TEST_POSTGRESQL_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    ),
    "mariadb": os.environ.get(
        "DO_IMAGE_ACTIONS_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test"
    ),
}
UNLIMITED = {"DO_IMAGE_ACTIONS_RATE_LIMIT_PER_MINUTE": "1000000000",
             "DO_IMAGE_ACTIONS_RATE_LIMIT_PER_HOUR": "1000000000"}  # fmt: skip


@contextlib.contextmanager
def database(dialect: str, folder: Path, source: Path | None = None) -> Iterator[str]:
    """Yield the URL of a new database migrated to head; drop it afterwards.

    ``source``: migrate it with another checkout's migrations, to its head (see bench.compare).
    """
    if dialect == "sqlite":
        path = folder / f"{uuid.uuid4().hex}.db"
        url = f"sqlite:///{path}"
    else:
        admin_url = make_url(SERVERS[dialect])
        name = f"dia_bench_{uuid.uuid4().hex[:10]}"
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {name}"))
        url = admin_url.set(database=name).render_as_string(hide_password=False)
    if source is None:
        engine = open_engine(url)
        upgrade(engine)
        engine.dispose()
    else:
        env = {**os.environ, "DO_IMAGE_ACTIONS_DATABASE_URL": url, "PYTHONPATH": str(source)}
        command = [sys.executable, "-m", "etl", "migrate"]
        done = subprocess.run(command, env=env, cwd=source, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"migrating with {source} failed: {done.stderr[-2000:]}")
    try:
        yield url
    finally:
        if dialect != "sqlite":
            with admin.connect() as conn:
                force = " WITH (FORCE)" if dialect == "postgresql" else ""
                conn.execute(text(f"DROP DATABASE {name}{force}"))
            admin.dispose()


@dataclass
class Fake:
    """A fake API running in its own process for the benchmark."""

    url: str
    ids: str  # the image ids, comma-separated, as DO_IMAGE_ACTIONS_IMAGES takes them
    page_kb: float  # the median size of a page of 200 actions
    last_words: list[str]


@contextlib.contextmanager
def fake_api(
    images: int, actions: int, latency: float = 0.0, limit: int = 0, region_scale: int = 1
) -> Iterator[Fake]:
    """Yield a fake API in its own process, pages encoded before it answers; then its last words."""
    command = [sys.executable, "-m", "bench.serve", "--images", str(images), "--actions",
               str(actions), "--latency", str(latency), "--minute-limit", str(limit),
               "--region-scale", str(region_scale)]  # fmt: skip
    server = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None  # noqa: S101
    assert server.stdin is not None  # noqa: S101
    url, ids, page_kb = server.stdout.readline().split()
    fake = Fake(url, ids, float(page_kb), [])
    try:
        yield fake
    finally:
        server.stdin.close()
        fake.last_words.append(server.stdout.read().strip())
        server.wait(timeout=60)


def run_measured(
    command: list[str], env: dict[str, str], cwd: Path | None = None
) -> tuple[str, float, float]:
    """Run a process; return its stdout, wall seconds and peak RSS in MiB."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, cwd=cwd)  # fmt: skip
    out, err = process.communicate()
    wall = time.perf_counter() - started
    if process.returncode not in (0, 3):
        raise RuntimeError(f"{command[3:5]} exited {process.returncode}: {err[-2000:]}")
    peak = json.loads(out.splitlines()[-1]).get("peak_rss_mib", 0.0)
    return out, wall, peak


def sync(
    fake: Fake,
    database_url: str,
    *,
    limited: bool = False,
    full: bool = False,
    source: Path | None = None,
) -> dict[str, Any]:
    """Run one `do-image-actions sync` process and return its JSON summary and peak RSS.

    ``source`` runs the code of another checkout instead of this one (see bench.compare).
    """
    env = {
        **os.environ,
        "DIGITALOCEAN_ACCESS_TOKEN": TOKEN,
        "DO_IMAGE_ACTIONS_API_URL": fake.url,
        "DO_IMAGE_ACTIONS_DATABASE_URL": database_url,
        "DO_IMAGE_ACTIONS_IMAGES": fake.ids,
        "DO_IMAGE_ACTIONS_STRATEGY": "per-image",  # the per-image path; see bench.feed
        **({} if limited else UNLIMITED),
        **({"PYTHONPATH": str(source)} if source is not None else {}),
    }
    command = [sys.executable, "-m", "bench.measure", "sync", "--json", "-q",
               *(["--full"] if full else [])]  # fmt: skip
    out, wall, peak = run_measured(command, env, cwd=source)
    summary = json.loads(out.splitlines()[-2])
    return {**summary, "wall": wall, "peak": peak}


def floor(fake: Fake, database_url: str, *, fetch_only: bool = False) -> dict[str, Any]:
    """Measure the floor in its own process: fetch and upsert seconds (or the fetch alone)."""
    command = [sys.executable, "-m", "bench.floor", "--api-url", fake.url, "--images", fake.ids,
               "--database-url", database_url]  # fmt: skip
    if fetch_only:
        command.append("--fetch-only")
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout)  # type: ignore[no-any-return]


@dataclass
class Floor:
    """The floor's medians: fetch, upsert, and their sum (the median of the sums)."""

    fetch: float
    upsert: float
    total: float

    @classmethod
    def of(cls, measured: list[dict[str, Any]]) -> Floor:
        """Return the medians of repeated measurements."""
        return cls(
            median([m["fetch"] for m in measured]),
            median([m["upsert"] for m in measured]),
            median([m["fetch"] + m["upsert"] for m in measured]),
        )


@dataclass
class Row:
    """One line of the results table (medians).

    ``against`` is what ``x floor`` divides by: the whole floor, or its fetch alone for a
    run that writes nothing; ``ratios`` are each repetition's seconds over its own floor.
    """

    scenario: str
    dialect: str
    seconds: float
    actions: int
    requests: int
    peak: float
    floor: Floor | None = None
    against: str = "total"
    ratios: list[float] = field(default_factory=list)
    note: str = ""

    def cells(self) -> list[str]:
        """Return the row as printed cells."""
        rate = f"{self.actions / self.seconds:,.0f}" if self.actions else ""
        floor = fetch = upsert = ratio = each = ""
        if self.floor is not None:
            fetch = f"{self.floor.fetch:.2f}"
            if self.against != "fetch":
                floor = f"{self.floor.total:.2f}"
                upsert = f"{self.floor.upsert:.2f}"
        if self.ratios:
            ratio = f"{median(self.ratios):.2f}" + (" (fetch)" if self.against == "fetch" else "")
            each = " ".join(f"{value:.2f}" for value in self.ratios)
        return [self.scenario, self.dialect, f"{self.seconds:.2f}", rate, str(self.requests),
                f"{self.peak:.0f}", floor, fetch, upsert, ratio, each, self.note]  # fmt: skip


COLUMNS = ["scenario", "database", "seconds", "actions/s", "requests", "peak RSS MiB",
           "floor s", "fetch s", "upsert s", "x floor", "each run", "note"]  # fmt: skip


def bracket(before: dict[str, Any], after: dict[str, Any]) -> float:
    """Return the floor at the moment of a sync measured between two floors: their mean."""
    return float(before["fetch"] + before["upsert"] + after["fetch"] + after["upsert"]) / 2


def median(values: list[float]) -> float:
    """Return the median."""
    return statistics.median(values)


def scenario_syncs(
    dialects: list[str],
    reps: int,
    folder: Path,
    images: int,
    actions: int,
    *,
    region_scale: int = 1,
    label: str = "",
) -> list[Row]:
    """Full, incremental and unchanged --full syncs of images x actions, beside the floor.

    Per dialect and repetition: the floor into one fresh database; then into another, a
    first sync (everything new), the floor again into a third, an incremental sync, the
    fetch floor, a --full sync over the same data and the fetch floor again. Each sync's
    ratio is to the mean of the floors measured just before and just after it.
    """
    rows = []
    label = label or f"{images}x{actions}"
    with fake_api(images, actions, region_scale=region_scale) as fake:
        for dialect in dialects:
            floors, fetches, full, incremental, unchanged = [], [], [], [], []
            ratios, unchanged_ratios = [], []
            for _ in range(reps):
                with database(dialect, folder) as floor_db:
                    before = floor(fake, floor_db)
                with database(dialect, folder) as db:
                    full.append(sync(fake, db))
                    with database(dialect, folder) as floor_db:
                        after = floor(fake, floor_db)
                    incremental.append(sync(fake, db))
                    fetch_before = floor(fake, db, fetch_only=True)["fetch"]
                    unchanged.append(sync(fake, db, full=True))
                    fetch_after = floor(fake, db, fetch_only=True)["fetch"]
                floors += [before, after]
                fetches += [fetch_before, fetch_after]
                ratios.append(full[-1]["seconds"] / bracket(before, after))
                unchanged_ratios.append(
                    unchanged[-1]["seconds"] / ((fetch_before + fetch_after) / 2)
                )
            base = Floor.of(floors)
            full_s = median([r["seconds"] for r in full])
            rows.append(Row(f"{label} full", dialect, full_s, full[0]["inserted"],
                            full[0]["requests"], median([r["peak"] for r in full]), base,
                            ratios=ratios, note=f"{fake.page_kb:.0f} KB a page"))  # fmt: skip
            inc_s = median([r["seconds"] for r in incremental])
            rows.append(Row(f"{label} incremental", dialect, inc_s, 0,
                            incremental[0]["requests"], median([r["peak"] for r in incremental]),
                            note=f"{inc_s / full_s:.1%} of full"))  # fmt: skip
            same = unchanged[0]
            rows.append(
                Row(
                    f"{label} --full unchanged",
                    dialect,
                    median([r["seconds"] for r in unchanged]),
                    same["inserted"] + same["updated"] + same["unchanged"],
                    same["requests"],
                    median([r["peak"] for r in unchanged]),
                    Floor(median(fetches), 0.0, median(fetches)),
                    against="fetch",
                    ratios=unchanged_ratios,
                    note=f"{same['updated']} updated; target <= 1.3x the fetch floor",
                )
            )
    return rows


def scenario_ratelimit(reps: int, folder: Path, images: int) -> list[Row]:
    """Images one-page images at 100 ms latency against an enforced 250-a-minute limit."""
    limit, seconds, notes, requests, peaks = 250, [], [], 0, []
    for _ in range(reps):
        with (
            fake_api(images, 5, latency=0.1, limit=limit) as fake,
            database("sqlite", folder) as db,
        ):
            result = sync(fake, db, limited=True)
        seconds.append(result["seconds"])
        requests = result["requests"]
        peaks.append(result["peak"])
        notes.append(fake.last_words[0])
    ideal = max(images - limit, 0) / limit * 60 + 0.1
    taken = median(seconds)
    note = f"ideal {ideal:.0f} s, {taken / ideal - 1:+.1%}; fake: {'; '.join(sorted(set(notes)))}"
    return [Row(f"{images} images, 100 ms, {limit}/min", "sqlite", taken, 0, requests,
                median(peaks), note=note)]  # fmt: skip


SCENARIOS = ["100k", "100k-wide", "1m", "ratelimit", "all"]


def main() -> None:
    """Run the chosen scenarios and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scenario", choices=SCENARIOS, default="all")
    parser.add_argument("--dialects", default="sqlite,postgresql,mariadb")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    dialects = args.dialects.split(",")
    chosen = SCENARIOS[:-1] if args.scenario == "all" else [args.scenario]
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="dia-bench-") as tmp:
        folder = Path(tmp)
        if "100k" in chosen:
            rows += scenario_syncs(dialects, args.reps, folder, 200, 500)
        if "100k-wide" in chosen:
            # Regions listing twice the sizes and features: pages of ~120 KB, not ~89 KB.
            rows += scenario_syncs(dialects, args.reps, folder, 200, 500, region_scale=2,
                                   label="200x500 wide")  # fmt: skip
        if "1m" in chosen:  # peak RSS matters here: target under 100 MiB
            rows += scenario_syncs(["sqlite"], args.reps, folder, 2000, 500)
        if "ratelimit" in chosen:
            rows += scenario_ratelimit(args.reps, folder, 1000)
    print(f"medians of {args.reps} runs; seconds are the sync's own clock (no interpreter "
          "start); floor s = fetch s + upsert s, bench.floor's clocks (a --full row's fetch s: "
          "the fetch alone); x floor is the median of each run's seconds over the mean of the "
          "floors measured just before and just after it (each run)")  # fmt: skip
    print(format_table([row.cells() for row in rows], COLUMNS))


if __name__ == "__main__":
    main()
