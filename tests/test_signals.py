"""SIGTERM and SIGINT end a run within two seconds, whatever it is waiting on, and cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from etl.fake import FakeApi
from etl.store.database import open_engine
from etl.store.schema import sync_lock, sync_runs
from tests.support.cli import run_cli, sync_args
from tests.support.databases import DIALECT_PARAMS, fresh_database, migrated_engine
from tests.support.doubles import TOKEN
from tests.support.faults import Fault
from tests.support.oracle import expected_table
from tests.support.rows import read_rows, without_bookkeeping

STOP_WITHIN = 2.0


def _first_path(api: FakeApi) -> str:
    return f"/v2/images/{next(iter(api.world.actions))}/actions"


def retry_wait(api: FakeApi) -> tuple[dict[str, str], Callable[[], bool]]:
    api.faults.append(
        Fault("status", 429, headers={"retry-after": "30"}, path=_first_path(api), skip=1)
    )
    return {}, lambda: any(entry.status == 429 for entry in api.served)


def rate_limit_wait(api: FakeApi) -> tuple[dict[str, str], Callable[[], bool]]:
    return {"DO_IMAGE_ACTIONS_RATE_LIMIT_PER_MINUTE": "2"}, lambda: len(api.served) >= 2


def stalled_request(api: FakeApi) -> tuple[dict[str, str], Callable[[], bool]]:
    api.faults.append(Fault("stall", seconds=30, path=_first_path(api), skip=1))
    return {}, lambda: len(api.requests_to(_first_path(api))) >= 2


def interrupt(
    api: FakeApi, database_url: str, signum: int, scenario: Callable[..., tuple]
) -> tuple[subprocess.Popen[str], float]:
    env, waiting = scenario(api)
    process = subprocess.Popen(
        [sys.executable, "-m", "etl", *sync_args(api, database_url, "--per-page", "5")],
        env={**os.environ, "DIGITALOCEAN_ACCESS_TOKEN": TOKEN, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while not waiting() and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)  # well inside the wait
    assert process.poll() is None, process.communicate()
    sent = time.monotonic()
    process.send_signal(signum)
    process.wait(timeout=30)
    return process, time.monotonic() - sent


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
@pytest.mark.parametrize("scenario", [retry_wait, rate_limit_wait, stalled_request])
def test_a_signal_ends_the_run_within_two_seconds_as_interrupted(
    api: FakeApi, tmp_path: Path, signum: int, scenario: Callable[..., tuple]
) -> None:
    database_url = f"sqlite:///{tmp_path / 'signals.db'}"

    process, took = interrupt(api, database_url, signum, scenario)

    out, err = process.communicate()
    assert took < STOP_WITHIN
    assert process.returncode == 128 + signum
    name = signal.Signals(signum).name
    assert [line for line in err.splitlines() if "interrupted" in line] == [
        line for line in err.splitlines() if f"interrupted by {name}" in line
    ]
    assert len([line for line in err.splitlines() if "ERROR" in line]) == 1
    assert "Traceback" not in err
    assert "total interrupted" in out
    engine = open_engine(database_url)
    [run] = read_rows(engine, sync_runs)
    assert run["outcome"] == "interrupted"
    assert run["finished_at"] is not None
    assert read_rows(engine, sync_lock) == []  # the lease was given back
    engine.dispose()


@pytest.mark.slow
@pytest.mark.parametrize("dialect", DIALECT_PARAMS)
def test_after_a_sigterm_the_next_run_completes_the_table(
    api: FakeApi, tmp_path: Path, dialect: str
) -> None:
    with fresh_database(dialect, tmp_path) as database_url:
        engine = migrated_engine(database_url)

        process, took = interrupt(api, database_url, signal.SIGTERM, retry_wait)
        process.communicate()
        api.faults.clear()
        after = run_cli(*sync_args(api, database_url, "--per-page", "5"))

        assert (process.returncode, after.returncode) == (143, 0), after.stderr
        assert took < STOP_WITHIN
        assert without_bookkeeping(read_rows(engine)) == expected_table(api.world)
        assert [run["outcome"] for run in read_rows(engine, sync_runs)] == [
            "interrupted",
            "succeeded",
        ]
        engine.dispose()
