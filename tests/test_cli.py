"""The command line as a user runs it: real processes, real exit codes, real output."""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from etl.fake import FakeApi
from etl.ops.cli import build_parser
from etl.store.database import open_engine
from etl.store.migrate import head_revision, upgrade
from etl.store.revision import current_revision
from tests.support.cli import run_cli, sync_args
from tests.support.databases import HTTP_DIALECT_PARAMS
from tests.support.doubles import TOKEN
from tests.support.faults import Fault
from tests.support.oracle import expected_table
from tests.support.rows import read_rows, without_bookkeeping
from tests.support.servers import free_port

README = Path(__file__).parents[1] / "README.md"


@pytest.mark.slow
@pytest.mark.parametrize("database_url", HTTP_DIALECT_PARAMS, indirect=True)
def test_cli_sync_prints_a_line_per_image_and_a_total(api: FakeApi, database_url: str) -> None:
    result = run_cli(*sync_args(api, database_url))

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 4
    assert re.fullmatch(
        r"image \d+: 3 pages, 3 requests, 45 inserted, 0 updated, 0 unchanged, [\d.]+ s", lines[0]
    )
    assert lines[-1].startswith(
        "total succeeded (incremental): 3 images (0 failed, 0 incomplete), 9 pages, "
        "9 requests (0 retried), 135 inserted, 0 updated, 0 unchanged"
    )

    again = run_cli(*sync_args(api, database_url, "--full"))

    assert again.returncode == 0
    assert again.stdout.splitlines()[-1].startswith(
        "total succeeded (full): 3 images (0 failed, 0 incomplete), 9 pages, "
        "9 requests (0 retried), 0 inserted, 0 updated, 135 unchanged"
    )


@pytest.mark.parametrize(
    ("args", "env", "code", "message"),
    [
        pytest.param(["--per-page", "500"], {}, 2, "--per-page must be from 1 to 200", id="usage"),
        pytest.param([], {"DIGITALOCEAN_ACCESS_TOKEN": ""}, 2, "no API token", id="no-token"),
        pytest.param(["--image", "999"], {}, 3, "image 999 was not found", id="partial"),
        pytest.param([], {"DIGITALOCEAN_ACCESS_TOKEN": "wrong"}, 1, "refused the token", id="auth"),
    ],
)
def test_cli_sync_exit_codes(
    api: FakeApi, tmp_path: Path, args: list[str], env: dict, code: int, message: str
) -> None:
    result = run_cli(*sync_args(api, f"sqlite:///{tmp_path / 'x.db'}", *args), env=env)

    assert result.returncode == code
    assert message in result.stderr


@pytest.mark.slow
def test_cli_sync_with_no_images_is_a_usage_error(tmp_path: Path) -> None:
    result = run_cli("sync", "--database-url", f"sqlite:///{tmp_path / 'x.db'}")

    assert result.returncode == 2
    assert (
        "no images to sync: list image ids in 'images', pass --image ID, or use --all-images"
        in (result.stderr)
    )


@pytest.mark.slow
def test_cli_bad_database_url_is_one_clear_sentence(api: FakeApi, tmp_path: Path) -> None:
    missing_dir = tmp_path / "no" / "such" / "dir" / "x.db"

    result = run_cli(*sync_args(api, f"sqlite:///{missing_dir}"))

    assert result.returncode == 1
    assert "unable to open database file" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_cli_never_prints_the_token(api: FakeApi, tmp_path: Path) -> None:
    api.faults.extend([Fault("status", 503), Fault("status", 401)])
    url = f"sqlite:///{tmp_path / 'x.db'}"

    outputs = [
        run_cli(*sync_args(api, url), "-v"),
        run_cli(*sync_args(api, url), "-v"),
        run_cli(*sync_args(api, url, "--image", "999"), "-v"),
        run_cli(*sync_args(api, url), env={"DIGITALOCEAN_ACCESS_TOKEN": TOKEN + " x"}),
    ]

    assert [o.returncode for o in outputs] == [1, 0, 3, 2]
    for output in outputs:
        assert TOKEN not in output.stdout + output.stderr
    assert "DEBUG" in outputs[1].stderr  # -v really was verbose
    assert read_rows(open_engine(url))  # and the database holds rows, without the token
    assert TOKEN not in Path(tmp_path / "x.db").read_bytes().decode("latin-1")


@pytest.mark.slow
def test_cli_migrate_upgrades_and_reports(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"

    first = run_cli("migrate", "--database-url", url)
    second = run_cli("migrate", "--database-url", url)

    assert first.returncode == second.returncode == 0
    assert re.fullmatch(r"sqlite:///.*m\.db: schema revision none -> \w+\n", first.stdout)
    assert "schema revision none" not in second.stdout


@pytest.mark.slow
def test_alembic_upgrade_head_from_the_repo_root(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    alembic = Path(sys.executable).with_name("alembic")

    result = subprocess.run(
        [str(alembic), "upgrade", "head"],
        cwd=Path(__file__).parents[1],
        env={**os.environ, "DO_IMAGE_ACTIONS_DATABASE_URL": url},
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert "Running upgrade  -> 0001" in result.stderr
    assert current_revision(open_engine(url)) == head_revision()


@pytest.mark.slow
def test_cli_demo_runs_without_a_token(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"

    result = run_cli("demo", "--database-url", url, env={"DIGITALOCEAN_ACCESS_TOKEN": ""})

    assert result.returncode == 0, result.stderr
    assert "total succeeded (incremental): 5 images (0 failed, 0 incomplete), 15 pages" in (
        result.stdout
    )
    assert "2250 inserted" in result.stdout
    assert "newest 5 rows of image_actions" in result.stdout
    assert len(read_rows(open_engine(url))) == 2250


def test_every_command_and_option_is_in_the_readme() -> None:
    readme = README.read_text(encoding="utf-8")
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for name, sub in commands.items():
        assert f"do-image-actions {name}" in readme, name
        for action in sub._actions:
            for option in action.option_strings:
                if option.startswith("--") and option != "--help":
                    assert option in readme, f"{name} {option}"


def test_every_option_of_every_command_has_help_text() -> None:
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    missing = [
        f"{name} {action.option_strings[0]}"
        for name, sub in [("", parser), *commands.items()]
        for action in sub._actions
        if action.option_strings and action.help in (None, "", argparse.SUPPRESS)
    ]

    assert missing == []


@pytest.mark.slow
def test_cli_sync_killed_midway_then_rerun_equals_an_uninterrupted_run(
    api: FakeApi, engine: Engine, database_url: str
) -> None:
    api.latency = 0.02
    args = sync_args(api, database_url, "--per-page", "5")  # 27 pages over 3 images
    process = subprocess.Popen(
        [sys.executable, "-m", "etl", *args],
        env={**os.environ, "DIGITALOCEAN_ACCESS_TOKEN": TOKEN},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while len(api.served) < 12 and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    partial = read_rows(engine)
    assert process.returncode == -signal.SIGKILL
    assert 0 < len(partial) < 135

    rerun = run_cli(*args)

    assert rerun.returncode == 0, rerun.stderr
    rows = read_rows(engine)
    assert without_bookkeeping(rows) == expected_table(api.world)
    # What was committed before the kill was kept, not rewritten.
    first_seen = {row["id"]: row["first_seen_at"] for row in rows}
    assert all(first_seen[row["id"]] == row["first_seen_at"] for row in partial)


@pytest.mark.slow
def test_cli_unreachable_api_is_one_sentence_and_stops_the_run(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    result = run_cli(
        "sync", "--api-url", f"http://127.0.0.1:{port}", "--database-url",
        f"sqlite:///{tmp_path / 'x.db'}", "--image", "1", "--image", "2", "--image", "3",
        env={"DO_IMAGE_ACTIONS_MAX_ATTEMPTS": "2"},
    )  # fmt: skip

    assert result.returncode == 1
    assert f"the API at http://127.0.0.1:{port} could not connect on every attempt" in result.stderr
    assert "check api_url and the network" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.count("attempt 1 failed") == 1  # one probe, not one per image


def test_a_failed_demo_says_why(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    engine = open_engine(url)
    upgrade(engine)
    with engine.begin() as conn:  # a second revision row: not a schema this tool made
        conn.execute(text("INSERT INTO alembic_version (version_num) VALUES ('9999')"))
    engine.dispose()

    result = run_cli("demo", "--database-url", url, "--images", "1", "--actions", "1")

    assert result.returncode == 1, result.stderr
    assert "total failed" in result.stdout
    assert "migrated by something other than do-image-actions" in result.stderr
