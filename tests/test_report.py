"""report: filters on every section, NDJSON, one CSV table per output, JSON nulls and timestamps."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from etl.fake import FakeApi
from etl.ops import cli
from etl.source.transform import flatten_action
from etl.store.load import upsert_actions
from tests.support.actions import action
from tests.support.doubles import TOKEN
from tests.support.runs import sync

# The timestamp status --json prints (Python's str of an aware UTC datetime).
STATUS_JSON_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{6})?\+00:00$")


# image 7: ids 1-3, image 8: ids 4-5. Id 2 starts at 23:30 UTC on 1 March.
ACTIONS = {
    7: [
        action(1, "completed", "transfer", "2026-03-01T23:30:00Z", "nyc3"),
        action(2, "errored", "convert", "2026-03-02T00:30:00+01:00", "ams3"),
        action(3, "in-progress", "transfer", "2026-03-02T10:00:00Z", None),
    ],
    8: [
        action(4, "errored", "transfer", "2026-03-02T12:00:00Z", None),
        action(5, "in-progress", "create", "2026-03-03T11:45:00Z", "nyc3"),
    ],
}


@pytest.fixture
def stored(engine: Engine, database_url: str) -> str:
    with engine.begin() as conn:
        for image_id, actions in ACTIONS.items():
            rows = [flatten_action(a, image_id=image_id) for a in actions]
            upsert_actions(conn, rows, now=datetime(2026, 3, 3, 12, tzinfo=UTC))
    return database_url


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        code = cli.main(list(args))
    except SystemExit as exc:  # argparse's own usage errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def report(capsys: pytest.CaptureFixture[str], url: str, *args: str) -> Any:
    code, out, err = run(capsys, "report", "--database-url", url, "--format", "json", *args)
    assert (code, err) == (0, ""), err
    return json.loads(out)


def test_filters_narrow_every_section_and_json_has_nulls(
    capsys: pytest.CaptureFixture[str], stored: str
) -> None:
    answer = report(
        capsys,
        stored,
        "--since",
        "2026-03-01T23:45:00Z",
        "--until",
        "2026-03-03",
        "--status",
        "errored",
        "--status",
        "in-progress",
    )

    assert answer == {
        "by_status": [{"status": "errored", "actions": 1}, {"status": "in-progress", "actions": 1}],
        "by_type": [{"type": "transfer", "actions": 2}],
        "by_region": [{"region": None, "actions": 2}],
        "by_day": [{"day": "2026-03-02", "actions": 2}],
        "errored": [
            {
                "id": 4,
                "image_id": 8,
                "type": "transfer",
                "status": "errored",
                "region_slug": None,
                "started_at": "2026-03-02 12:00:00+00:00",
            }
        ],
        "stuck_in_progress": [  # started long before now, the real clock's
            {
                "id": 3,
                "image_id": 7,
                "type": "transfer",
                "status": "in-progress",
                "region_slug": None,
                "started_at": "2026-03-02 10:00:00+00:00",
            }
        ],
        "missing": [],
    }


@pytest.mark.parametrize(
    ("filters", "by_status"),
    [
        pytest.param([], {"completed": 1, "errored": 2, "in-progress": 2}, id="none"),
        pytest.param(["--image", "8"], {"errored": 1, "in-progress": 1}, id="image"),
        pytest.param(
            ["--image", "8", "--image", "7"],
            {"completed": 1, "errored": 2, "in-progress": 2},
            id="images",
        ),
        pytest.param(
            ["--type", "transfer"], {"completed": 1, "errored": 1, "in-progress": 1}, id="type"
        ),
        pytest.param(["--status", "errored"], {"errored": 2}, id="status"),
        pytest.param(["--since", "2026-03-02"], {"errored": 1, "in-progress": 2}, id="since-day"),
        pytest.param(["--until", "2026-03-02"], {"completed": 1, "errored": 1}, id="until-day"),
        pytest.param(  # 10:00 UTC: id 3 starts exactly then, and since is inclusive
            ["--since", "2026-03-02T11:00:00+01:00"],
            {"errored": 1, "in-progress": 2},
            id="since-offset",
        ),
        pytest.param(  # no offset: UTC
            ["--since", "2026-03-02T10:00:01"], {"errored": 1, "in-progress": 1}, id="since-naive"
        ),
        pytest.param(
            ["--image", "7", "--type", "transfer", "--until", "2026-03-02T10:00:00Z"],
            {"completed": 1},
            id="combined",
        ),
    ],
)
def test_each_filter(
    capsys: pytest.CaptureFixture[str], stored: str, filters: list[str], by_status: dict
) -> None:
    answer = report(capsys, stored, "--section", "by_status", *filters)

    assert {row["status"]: row["actions"] for row in answer["by_status"]} == by_status


def test_ndjson_is_one_object_per_line_naming_its_section(
    capsys: pytest.CaptureFixture[str], stored: str
) -> None:
    code, out, _err = run(
        capsys, "report", "--database-url", stored, "--format", "ndjson", "--image", "8"
    )

    assert code == 0
    assert [json.loads(line) for line in out.splitlines()] == [
        {"section": "by_status", "status": "errored", "actions": 1},
        {"section": "by_status", "status": "in-progress", "actions": 1},
        {"section": "by_type", "type": "create", "actions": 1},
        {"section": "by_type", "type": "transfer", "actions": 1},
        {"section": "by_region", "region": None, "actions": 1},
        {"section": "by_region", "region": "nyc3", "actions": 1},
        {"section": "by_day", "day": "2026-03-02", "actions": 1},
        {"section": "by_day", "day": "2026-03-03", "actions": 1},
        {
            "section": "errored",
            "id": 4,
            "image_id": 8,
            "type": "transfer",
            "status": "errored",
            "region_slug": None,
            "started_at": "2026-03-02 12:00:00+00:00",
        },
        {
            "section": "stuck_in_progress",
            "id": 5,
            "image_id": 8,
            "type": "create",
            "status": "in-progress",
            "region_slug": "nyc3",
            "started_at": "2026-03-03 11:45:00+00:00",
        },
    ]


def test_csv_needs_one_table_per_output(capsys: pytest.CaptureFixture[str], stored: str) -> None:
    code, out, err = run(capsys, "report", "--database-url", stored, "--format", "csv")

    assert (code, out) == (2, "")
    assert "a CSV file holds one table: with --format csv, choose one with --section" in err


def test_csv_section_reads_back_with_the_csv_module(
    capsys: pytest.CaptureFixture[str], stored: str
) -> None:
    code, out, _err = run(
        capsys, "report", "--database-url", stored, "--format", "csv", "--section", "by_region"
    )

    assert code == 0
    assert list(csv.DictReader(io.StringIO(out))) == [
        {"region": "", "actions": "2"},
        {"region": "ams3", "actions": "1"},
        {"region": "nyc3", "actions": "2"},
    ]


def test_csv_output_dir_writes_a_file_per_section(
    capsys: pytest.CaptureFixture[str], stored: str, tmp_path: Path
) -> None:
    folder = tmp_path / "out" / "today"

    code, out, _err = run(
        capsys,
        "report",
        "--database-url",
        stored,
        "--format",
        "csv",
        "--output-dir",
        str(folder),
        "--type",
        "transfer",
    )

    assert code == 0
    names = ["by_status", "by_type", "by_region", "by_day", "errored", "stuck_in_progress"]
    names.append("missing")
    assert sorted(path.name for path in folder.iterdir()) == sorted(f"{n}.csv" for n in names)
    assert f"wrote {folder / 'errored.csv'} (1 rows)" in out.splitlines()

    def read(name: str) -> list[dict[str, str]]:
        with (folder / f"{name}.csv").open(newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))

    assert read("by_day") == [
        {"day": "2026-03-01", "actions": "1"},
        {"day": "2026-03-02", "actions": "2"},
    ]
    assert read("errored") == [
        {
            "id": "4",
            "image_id": "8",
            "type": "transfer",
            "status": "errored",
            "region_slug": "",
            "started_at": "2026-03-02 12:00:00+00:00",
        }
    ]
    assert read("missing") == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ["--output-dir", "x"], "--output-dir writes CSV files; add --format csv", id="dir"
        ),
        pytest.param(
            ["--since", "2026-03-02", "--until", "2026-03-01"],
            "--since 2026-03-02 00:00:00+00:00 is not before --until",
            id="reversed",
        ),
        pytest.param(["--since", "yesterday"], "'yesterday' is not an ISO date", id="not-iso"),
    ],
)
def test_filters_that_cannot_work_are_usage_errors(
    capsys: pytest.CaptureFixture[str], stored: str, args: list[str], message: str
) -> None:
    code, out, err = run(capsys, "report", "--database-url", stored, *args)

    assert (code, out) == (2, "")
    assert message in err


def test_the_table_for_people_is_unchanged(capsys: pytest.CaptureFixture[str], stored: str) -> None:
    code, out, _err = run(
        capsys, "report", "--database-url", stored, "--status", "errored", "--image", "8"
    )

    assert code == 0
    blocks = out.split("\n\n")
    assert blocks[2] == "by_region:\nregion  actions\n(none)  1"
    assert blocks[4] == (
        "errored:\nid  image_id  type      status   region_slug  started_at\n"
        "4   8         transfer  errored               2026-03-02T12:00:00+00:00"
    )
    assert blocks[6] == "missing:\nid  image_id  type  status  region_slug  started_at\n(none)\n"


def test_report_spells_timestamps_as_status_json_does(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    api: FakeApi,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("DIGITALOCEAN_ACCESS_TOKEN", TOKEN)
    url = f"sqlite:///{tmp_path / 'synced.db'}"
    sync(api, url)

    _code, status_out, _err = run(capsys, "status", "--json", "--database-url", url)
    _code, report_out, _err = run(
        capsys, "report", "--database-url", url, "--format", "ndjson", "--status", "errored"
    )

    status = json.loads(status_out)
    stamps = [status["last_success_at"], status["runs"][0]["started_at"]]
    stamps += [json.loads(line)["started_at"] for line in report_out.splitlines()[-2:]]
    assert len(stamps) == 4
    assert [stamp for stamp in stamps if not STATUS_JSON_TIMESTAMP.match(stamp)] == []
