"""JSON log lines: structured fields beside the message, absent when unknown, secrets blanked."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from sqlalchemy import Engine

from etl.fake import FakeApi
from etl.ops.logs import STRUCTURED_FIELDS, JsonFormatter
from tests.support.cli import run_cli, sync_args
from tests.support.doubles import TOKEN

FIELDS = set(STRUCTURED_FIELDS)


def json_lines(stderr: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stderr.splitlines()]


def fields(entry: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in entry.items() if key in FIELDS}


@pytest.mark.slow
def test_json_log_lines_carry_run_image_page_and_requests(api: FakeApi, database_url: str) -> None:
    images = list(api.world.actions)

    result = run_cli(*sync_args(api, database_url, "-v", "--log-format", "json", "--image", "999"))

    assert result.returncode == 3, result.stderr
    assert TOKEN not in result.stderr
    logs = json_lines(result.stderr)
    scan = [e for e in logs if e["logger"] == "etl.sync.image_scan"]
    pages = {(e["image_id"], e["page"]) for e in scan if "page" in e}
    assert pages == {(image, page) for image in images for page in (1, 2, 3)}
    assert {e["run_id"] for e in scan} == {1}
    per_image = sorted(
        (fields(e) for e in scan if "requests" in e), key=lambda found: found["image_id"]
    )  # workers finish images in any order
    assert per_image == [{"run_id": 1, "image_id": 999, "requests": 1}] + [
        {"run_id": 1, "image_id": image, "requests": 3} for image in sorted(images)
    ]
    [gone] = [e for e in logs if e["level"] == "error" and "image 999" in e["message"]]
    assert fields(gone) == {"run_id": 1, "image_id": 999}
    run_lines = [fields(e) for e in logs if e["logger"] == "etl.sync.run"]
    assert run_lines == [{"run_id": 1}, {"run_id": 1, "requests": 10}]
    # Lines that know none of the fields carry none of them, not nulls.
    http = [e for e in logs if e["logger"].startswith("urllib3")]
    assert http
    assert [e for e in http if fields(e)] == []


@pytest.mark.slow
def test_a_dry_run_has_no_run_id_to_log(api: FakeApi, engine: Engine, database_url: str) -> None:
    result = run_cli(*sync_args(api, database_url, "-v", "--log-format", "json", "--dry-run"))

    assert result.returncode == 0, result.stderr
    scan = [e for e in json_lines(result.stderr) if e["logger"] == "etl.sync.image_scan"]
    assert scan
    assert [e for e in scan if "run_id" in e] == []
    assert {e["image_id"] for e in scan} == set(api.world.actions)


@pytest.mark.parametrize(
    "secret",
    [
        pytest.param(TOKEN, id="plain"),
        pytest.param('dop_v1_with"quote\\and', id="json-escaped"),
    ],
)
def test_json_formatter_blanks_secrets_in_fields_and_message(secret: str) -> None:
    record = logging.LogRecord("etl", logging.ERROR, __file__, 1, "echoed %s", (secret,), None)
    record.__dict__.update(image_id=7, page=f"page of {secret}", run_id=None)

    line = JsonFormatter(None, [secret]).format(record)

    assert fields(json.loads(line)) == {"image_id": 7, "page": "page of ***"}
    assert json.loads(line)["message"] == "echoed ***"
    assert "dop_v1" not in line
