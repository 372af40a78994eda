"""Start-up cost: each command imports only what it needs, seen from a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from etl.fake import FakeApi
from tests.support.doubles import TOKEN
from tests.support.runs import sync

# Runs the CLI's main in a fresh interpreter; prints its exit code, what it printed, and
# every module loaded by then, as one JSON object.
PROBE = """
import contextlib, io, json, sys
from etl.ops.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        code = main(sys.argv[1:])
    except SystemExit as exc:  # --help exits through argparse
        code = exc.code
json.dump({"code": code, "stdout": out.getvalue(), "modules": sorted(sys.modules)}, sys.stdout)
"""
# What printing the help does without: the database side, the API side, the run machinery.
NOT_FOR_HELP = (
    "sqlalchemy",
    "alembic",
    "requests",
    "tenacity",
    "orjson",
    "etl.source",
    "etl.store",
    "etl.sync",
)
# What reading the database does without: the API side, the run machinery, migrations, upserts.
NOT_FOR_READERS = (
    "requests",
    "tenacity",
    "etl.source",
    "etl.sync",
    "alembic",
    "etl.store.load",
    "etl.store.upsert",
    "etl.store.bulk",
)


def probe(*args: str) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


def loaded(answer: dict[str, Any], *names: str) -> list[str]:
    """Return which of ``names`` the probed process imported (a package, or any module in it)."""
    modules = answer["modules"]
    return [name for name in names if any(m == name or m.startswith(f"{name}.") for m in modules)]


@pytest.fixture
def synced_sqlite(api: FakeApi, tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'synced.db'}"
    run = sync(api, url)
    assert run.outcome == "succeeded"
    return url


def test_help_imports_neither_the_database_nor_the_api_side() -> None:
    answer = probe("--help")

    assert answer["code"] == 0
    assert answer["stdout"].startswith("usage: do-image-actions ")
    assert loaded(answer, *NOT_FOR_HELP) == []


def test_status_reads_the_database_without_the_api_side(api: FakeApi, synced_sqlite: str) -> None:
    answer = probe("status", "--database-url", synced_sqlite)

    assert answer["code"] == 0
    lines = answer["stdout"].splitlines()
    assert lines[0] == "healthy: the last run (id 1) succeeded"
    for image_id in api.world.actions:
        assert any(line.startswith(f"{image_id} ") for line in lines), image_id
    assert loaded(answer, "sqlalchemy") == ["sqlalchemy"]
    assert loaded(answer, *NOT_FOR_READERS) == []


def test_report_reads_the_database_without_the_api_side(api: FakeApi, synced_sqlite: str) -> None:
    answer = probe("report", "--database-url", synced_sqlite, "--format", "json")

    assert answer["code"] == 0
    sections = json.loads(answer["stdout"])
    by_status = {row["status"]: row["actions"] for row in sections["by_status"]}
    actions = [action for listed in api.world.actions.values() for action in listed]
    assert by_status == dict(Counter(action["status"] for action in actions))
    assert loaded(answer, "sqlalchemy") == ["sqlalchemy"]
    assert loaded(answer, *NOT_FOR_READERS) == []


def test_a_sync_on_a_current_schema_does_not_load_alembic(
    api: FakeApi, synced_sqlite: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cron job's every run checks the schema; only one that must migrate loads Alembic."""
    monkeypatch.setenv("DIGITALOCEAN_ACCESS_TOKEN", TOKEN)
    monkeypatch.setenv("DO_IMAGE_ACTIONS_API_URL", api.url)
    images = [arg for image_id in api.world.actions for arg in ("--image", str(image_id))]

    answer = probe("sync", "--database-url", synced_sqlite, "--json", *images)

    assert answer["code"] == 0
    assert json.loads(answer["stdout"])["outcome"] == "succeeded"
    assert loaded(answer, "alembic", "mako") == []
