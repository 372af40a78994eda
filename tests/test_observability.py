"""What operators see: metrics, status, report, dry runs, JSON output and logs, progress."""

from __future__ import annotations

import io
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine

from etl.fake import FakeApi
from etl.ops.progress import Progress
from etl.ops.report import Section, build_report
from etl.source.transform import flatten_action
from etl.store.load import upsert_actions
from etl.store.schema import sync_runs
from etl.sync.run import run_sync
from etl.timeutil import utc_now
from tests.support.actions import action
from tests.support.cli import run_cli, sync_args
from tests.support.doubles import TOKEN
from tests.support.oracle import expected_table, utc
from tests.support.rows import read_rows, without_bookkeeping
from tests.support.runs import settings_for, sync


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.mark.slow
def test_metrics_file_parses_as_prometheus_text(
    api: FakeApi, engine: Engine, database_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "do_image_actions.prom"

    result = run_cli(*sync_args(api, database_url, "--metrics-file", str(path)))

    assert result.returncode == 0, result.stderr
    values = samples(path.read_text())
    prefix = "do_image_actions_"
    assert values[(prefix + "last_run_outcome", (("outcome", "succeeded"),))] == 1
    assert values[(prefix + "last_run_outcome", (("outcome", "failed"),))] == 0
    assert values[(prefix + "last_run_rows", (("outcome", "inserted"),))] == 135
    assert values[(prefix + "last_run_rows", (("outcome", "rejected"),))] == 0
    assert values[(prefix + "last_run_requests", ())] == 9
    assert values[(prefix + "last_run_images", (("result", "synced"),))] == 3
    [run] = read_rows(engine, sync_runs)
    assert values[(prefix + "last_success_timestamp_seconds", ())] == run["finished_at"].timestamp()
    assert not list(tmp_path.glob(".do_image_actions.prom.*"))  # no temporary file left
    assert TOKEN not in path.read_text()


@pytest.mark.slow
def test_metrics_of_a_failed_run_keep_the_last_success(
    api: FakeApi, engine: Engine, database_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "m.prom"
    run_cli(*sync_args(api, database_url, "--metrics-file", str(path)))
    success = samples(path.read_text())[("do_image_actions_last_success_timestamp_seconds", ())]

    failed = run_cli(
        *sync_args(api, database_url, "--metrics-file", str(path)),
        env={"DIGITALOCEAN_ACCESS_TOKEN": "wrong"},
    )

    assert failed.returncode == 1
    values = samples(path.read_text())
    assert values[("do_image_actions_last_run_outcome", (("outcome", "failed"),))] == 1
    assert values[("do_image_actions_last_success_timestamp_seconds", ())] == success


@pytest.mark.slow
def test_metrics_file_in_a_missing_folder_is_a_clear_error(api: FakeApi, tmp_path: Path) -> None:
    result = run_cli(
        *sync_args(api, f"sqlite:///{tmp_path / 'x.db'}", "--metrics-file", "/nonexistent/m.prom")
    )

    assert result.returncode == 0  # a warning: the sync itself succeeded
    assert "metrics_file /nonexistent/m.prom cannot be written" in result.stderr


@pytest.mark.slow
def test_status_exit_codes(api: FakeApi, engine: Engine, database_url: str) -> None:
    def status(*args: str) -> tuple[int, str]:
        result = run_cli("status", "--database-url", database_url, *args)
        return result.returncode, result.stdout.splitlines()[0] if result.stdout else result.stderr

    assert status() == (1, "UNHEALTHY: no finished run is recorded yet")

    sync(api, database_url)
    code, line = status("--max-age", "1h")
    assert (code, line) == (0, "healthy: the last run (id 1) succeeded")

    sync(api, database_url, token="wrong")
    code, line = status()
    assert code == 1
    assert line.startswith("UNHEALTHY: the last run (id 2) failed: the API refused the token")


@pytest.mark.slow
def test_status_max_age_judges_the_last_success(
    api: FakeApi, engine: Engine, database_url: str
) -> None:
    three_hours_ago = utc_now() - timedelta(hours=3)
    run_sync(settings_for(api, database_url), now=lambda: three_hours_ago, sleep=lambda _s: None)

    stale = run_cli("status", "--database-url", database_url, "--max-age", "2h")
    fresh = run_cli("status", "--database-url", database_url, "--max-age", "4h", "--json")

    assert stale.returncode == 1
    assert stale.stdout.startswith("UNHEALTHY: the last success was 3h ago, more than 2h")
    assert fresh.returncode == 0
    parsed = json.loads(fresh.stdout)
    assert (parsed["healthy"], len(parsed["runs"]), len(parsed["images"])) == (True, 1, 3)


@pytest.mark.slow
def test_status_rejects_a_bad_max_age(engine: Engine, database_url: str) -> None:
    result = run_cli("status", "--database-url", database_url, "--max-age", "soon")

    assert result.returncode == 2
    assert "'soon' is not a duration; write it like 90s, 30m, 2h or 1d" in result.stderr


KNOWN = [
    action(1, "completed", "transfer", "2026-03-01T23:30:00Z", "nyc3"),
    action(2, "errored", "convert", "2026-03-02T00:30:00+01:00", "ams3"),  # 23:30 UTC on 1 March
    action(3, "in-progress", "transfer", "2026-03-02T10:00:00Z", None),
    action(4, "in-progress", "create", "2026-03-03T11:45:00Z", "nyc3"),
]
NOW = datetime(2026, 3, 3, 12, 0, tzinfo=UTC)


def load_known(engine: Engine) -> None:
    with engine.begin() as conn:
        upsert_actions(conn, [flatten_action(a, image_id=7) for a in KNOWN], now=NOW)


def test_report_on_a_known_data_set(engine: Engine) -> None:
    load_known(engine)

    with engine.connect() as conn:
        sections = build_report(conn, now=NOW, stuck_after=timedelta(hours=1))

    assert sections == [
        Section(
            "by_status",
            ("status", "actions"),
            [("completed", 1), ("errored", 1), ("in-progress", 2)],
            "(none)",
        ),
        Section(
            "by_type",
            ("type", "actions"),
            [("convert", 1), ("create", 1), ("transfer", 2)],
            "(none)",
        ),
        Section(
            "by_region", ("region", "actions"), [(None, 1), ("ams3", 1), ("nyc3", 2)], "(none)"
        ),
        Section(
            "by_day",
            ("day", "actions"),
            [("2026-03-01", 2), ("2026-03-02", 1), ("2026-03-03", 1)],
            "(none)",
        ),
        Section(
            "errored",
            ("id", "image_id", "type", "status", "region_slug", "started_at"),
            [(2, 7, "convert", "errored", "ams3", datetime(2026, 3, 1, 23, 30, tzinfo=UTC))],
        ),
        Section(
            "stuck_in_progress",
            ("id", "image_id", "type", "status", "region_slug", "started_at"),
            [(3, 7, "transfer", "in-progress", None, datetime(2026, 3, 2, 10, 0, tzinfo=UTC))],
        ),
        Section("missing", ("id", "image_id", "type", "status", "region_slug", "started_at"), []),
    ]


@pytest.mark.slow
def test_report_cli_formats(engine: Engine, database_url: str) -> None:
    load_known(engine)
    base = ("report", "--database-url", database_url)

    csv_out = run_cli(*base, "--format", "csv", "--section", "by_status")
    json_out = run_cli(*base, "--format", "json", "--section", "by_region")
    table_out = run_cli(*base, "--section", "by_type")
    bad = run_cli(*base, "--section", "nope")

    assert csv_out.stdout == ("status,actions\ncompleted,1\nerrored,1\nin-progress,2\n")
    assert json.loads(json_out.stdout) == {
        "by_region": [
            {"region": None, "actions": 1},
            {"region": "ams3", "actions": 1},
            {"region": "nyc3", "actions": 2},
        ]
    }
    assert table_out.stdout == (
        "by_type:\ntype      actions\nconvert   1\ncreate    1\ntransfer  2\n"
    )
    assert bad.returncode == 2
    assert "--section nope is not a section; choose one of by_status" in bad.stderr


@pytest.mark.slow
def test_stored_times_and_report_days_are_utc_whatever_the_machine_time_zone(
    api: FakeApi, engine: Engine, database_url: str
) -> None:
    tokyo = {"TZ": "Asia/Tokyo"}  # UTC+9: an action from 15:00 UTC on is the next day there
    days = Counter(
        utc(action["started_at"]).date().isoformat()  # type: ignore[union-attr]
        for actions in api.world.actions.values()
        for action in actions
    )

    synced = run_cli(*sync_args(api, database_url), env=tokyo)
    report = run_cli(
        "report", "--database-url", database_url, "--format", "json", "--section", "by_day",
        env=tokyo,
    )  # fmt: skip

    assert synced.returncode == 0, synced.stderr
    assert without_bookkeeping(read_rows(engine)) == expected_table(api.world)
    assert json.loads(report.stdout) == {
        "by_day": [{"day": day, "actions": count} for day, count in sorted(days.items())]
    }


@pytest.mark.slow
def test_dry_run_reports_and_writes_nothing(
    api: FakeApi, engine: Engine, database_url: str
) -> None:
    result = run_cli(*sync_args(api, database_url, "--dry-run"))

    assert result.returncode == 0, result.stderr
    assert "135 would be inserted, 0 would be updated, 0 unchanged" in result.stdout
    assert "(incremental, dry run)" in result.stdout
    assert read_rows(engine) == []
    assert read_rows(engine, sync_runs) == []


def test_dry_run_counts_would_be_updates(api: FakeApi, engine: Engine, database_url: str) -> None:
    sync(api, database_url)
    running = next(a for _, a in api.world.all_actions() if a["status"] == "in-progress")
    api.world.complete(running["id"])
    before = read_rows(engine)

    run = sync(api, database_url, full=True, dry_run=True)

    assert (run.counts.inserted, run.counts.updated, run.counts.unchanged) == (0, 1, 134)
    assert read_rows(engine) == before
    assert len(read_rows(engine, sync_runs)) == 1


@pytest.mark.slow
def test_json_summary_and_json_logs(api: FakeApi, engine: Engine, database_url: str) -> None:
    result = run_cli(
        *sync_args(api, database_url, "--json", "--log-format", "json", "--image", "999")
    )

    assert result.returncode == 3
    summary = json.loads(result.stdout)
    assert (summary["outcome"], summary["inserted"], len(summary["images"])) == ("partial", 135, 4)
    assert summary["images"][-1]["gone"] is True
    logs = [json.loads(line) for line in result.stderr.splitlines()]
    assert any(
        entry["level"] == "error" and "image 999 was not found" in entry["message"]
        for entry in logs
    )
    assert TOKEN not in result.stdout + result.stderr


def test_progress_draws_only_on_a_terminal(api: FakeApi, engine: Engine, database_url: str) -> None:
    terminal, pipe = io.StringIO(), io.StringIO()
    shown, hidden = Progress(terminal, enabled=True), Progress(pipe)

    for progress in (shown, hidden):
        run_sync(
            settings_for(api, database_url),
            on_page=progress.page,
            on_image=progress.image,
            sleep=lambda _s: None,
        )
        progress.close()

    assert "images done 0 | image" in terminal.getvalue()
    assert "page 3 of meta.total 45" in terminal.getvalue()
    assert pipe.getvalue() == ""
