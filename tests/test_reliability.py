"""Faults never lose or corrupt data: API faults, SIGKILLs, dying databases, full disks."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from etl.fake import FakeApi, World
from etl.store.database import open_engine
from etl.store.migrate import upgrade
from etl.store.schema import image_actions, sync_runs
from etl.sync.run import run_sync
from tests.support.cli import run_cli, sync_args
from tests.support.databases import DECISION_DIALECT_PARAMS
from tests.support.doubles import TOKEN
from tests.support.faults import FaultPlan
from tests.support.oracle import expected_table
from tests.support.rows import read_rows, without_bookkeeping
from tests.support.runs import settings_for
from tests.support.scripted import ScriptedApi
from tests.support.servers import private_server, remount, tmpfs


def stored_per_image(engine: Engine) -> dict[int, int]:
    with engine.connect() as conn:
        query = select(image_actions.c.image_id, func.count()).group_by(image_actions.c.image_id)
        return dict(conn.execute(query).all())


@pytest.mark.slow
@pytest.mark.parametrize("database_url", DECISION_DIALECT_PARAMS, indirect=True)
def test_soak_100_images_with_20_percent_faults_equals_a_fault_free_run(
    engine: Engine, database_url: str, tmp_path: Path
) -> None:
    world = World.generate(images=100, actions_per_image=25, seed=5)
    with ScriptedApi(world, token=TOKEN) as api:
        api.plan = FaultPlan(rate=0.2, shift_rate=0.2, stall_seconds=0.3, seed=99)
        faulty = settings_for(api, database_url, per_page=10, timeout=0.15, max_attempts=12)
        runs = [run_sync(faulty, sleep=lambda _s: None) for _ in range(2)]
        api.plan.shift_rate = 0.0  # live data settles; faults go on
        runs.append(run_sync(faulty, sleep=lambda _s: None))
        faults = [entry for entry in api.served if entry.status != 200]

        api.plan = FaultPlan()
        clean_url = f"sqlite:///{tmp_path / 'clean.db'}"
        clean = run_sync(settings_for(api, clean_url, per_page=200), full=True)

    assert len(faults) > 100  # the faults really happened
    assert sum(run.retries for run in runs) >= len(faults)
    assert runs[-1].outcome == "succeeded"
    assert clean.outcome == "succeeded"
    rows = read_rows(engine)
    clean_rows = read_rows(open_engine(clean_url))
    assert without_bookkeeping(rows) == without_bookkeeping(clean_rows)
    assert without_bookkeeping(rows) == expected_table(world)
    assert all(row["first_seen_at"] <= row["changed_at"] for row in rows)
    # meta.total reconciled: every image holds exactly what the API counts.
    assert stored_per_image(engine) == {
        image: len(listed) for image, listed in world.actions.items()
    }


@pytest.mark.slow
def test_sigkill_at_random_points_then_rerun_equals_an_uninterrupted_run(
    api: FakeApi, engine: Engine, database_url: str
) -> None:
    rng = random.Random(20261127)  # noqa: S311  (reproducible kill points)
    api.latency = 0.01
    first = next(iter(api.world.actions))
    args = [sys.executable, "-m", "etl", *sync_args(api, database_url, "--per-page", "5")]
    env = {**os.environ, "DIGITALOCEAN_ACCESS_TOKEN": TOKEN}
    killed = 0
    for cycle in range(8):
        if cycle % 3 == 1:
            api.world.add_actions(first, 4)
        before = len(api.served)
        target = before + rng.randint(1, 12)
        process = subprocess.Popen(
            args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 20
        while len(api.served) < target and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        killed += process.returncode == -signal.SIGKILL

    final = run_cli(*sync_args(api, database_url, "--per-page", "5"))

    assert killed >= 6
    assert final.returncode == 0, final.stderr  # no lock was left blocking it
    assert without_bookkeeping(read_rows(engine)) == expected_table(api.world)
    ledger = read_rows(engine, sync_runs)
    assert ledger[-1]["outcome"] == "succeeded"
    unfinished = [row for row in ledger[:-1] if row["finished_at"] is None]
    assert len(unfinished) >= killed - 1  # a kill during start-up may precede its row
    assert {row["outcome"] for row in unfinished} == {"running"}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["postgresql", "mariadb"])
def test_database_dying_mid_run_fails_cleanly_and_the_next_run_completes(
    api: FakeApi, kind: str
) -> None:
    api.latency = 0.03
    with private_server(kind) as server:
        args = sync_args(api, server.url, "--per-page", "5")
        process = subprocess.Popen(
            [sys.executable, "-m", "etl", *args],
            env={**os.environ, "DIGITALOCEAN_ACCESS_TOKEN": TOKEN},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 30
        while len(api.served) < 8 and time.monotonic() < deadline:
            time.sleep(0.005)
        server.kill()
        _, stderr = process.communicate(timeout=60)

        assert process.returncode == 1
        assert f"database {server.url} failed (OperationalError" in stderr
        assert "check that it is reachable and writable, then run again" in stderr
        assert "Traceback" not in stderr

        server.start()
        engine = open_engine(server.url)
        kept = read_rows(engine)
        for image_id, listed in api.world.actions.items():
            stored = {row["id"] for row in kept if row["image_id"] == image_id}
            assert stored == {a["id"] for a in listed[: len(stored)]}  # a prefix of the list
            assert len(stored) % 5 == 0 or len(stored) == len(listed)  # whole pages only
        assert 0 < len(kept) < 135

        rerun = run_cli(*args)

        assert rerun.returncode == 0, rerun.stderr
        assert without_bookkeeping(read_rows(engine)) == expected_table(api.world)
        engine.dispose()


@pytest.mark.slow
def test_read_only_sqlite_file_is_a_clear_error_and_loses_nothing(
    api: FakeApi, tmp_path: Path
) -> None:
    with tmpfs(tmp_path / "mnt", "8m") as folder:
        url = f"sqlite:///{folder / 'actions.db'}"
        assert run_cli(*sync_args(api, url)).returncode == 0
        api.world.add_actions(next(iter(api.world.actions)), 2)
        remount(folder, "ro")

        result = run_cli(*sync_args(api, url))

        assert result.returncode == 1
        assert f"database {url} failed (OperationalError: " in result.stderr
        assert "Traceback" not in result.stderr
        remount(folder, "rw")
        assert len(read_rows(open_engine(url))) == 135


@pytest.mark.slow
def test_full_sqlite_disk_is_a_clear_error_and_the_next_run_completes(
    tmp_path: Path,
) -> None:
    world = World.generate(images=2, actions_per_image=400, seed=1)
    with ScriptedApi(world, token=TOKEN) as api, tmpfs(tmp_path / "mnt", "600k") as folder:
        url = f"sqlite:///{folder / 'actions.db'}"
        engine = open_engine(url)
        upgrade(engine)

        result = run_cli(*sync_args(api, url, "--per-page", "50"))

        assert result.returncode == 1
        assert "database or disk is full" in result.stderr
        kept = len(read_rows(engine))
        assert kept % 50 == 0  # whole pages only
        remount(folder, "size=16m")
        rerun = run_cli(*sync_args(api, url, "--per-page", "50"))
        assert rerun.returncode == 0, rerun.stderr
        assert without_bookkeeping(read_rows(engine)) == expected_table(world)
        engine.dispose()
