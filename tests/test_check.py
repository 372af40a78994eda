"""do-image-actions check: settings and their sources, one API request, the database's schema."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from sqlalchemy import Engine

from etl.database_url import mask_database_url
from etl.fake import FakeApi
from etl.ops import cli
from etl.store.database import open_engine
from etl.store.migrate import head_revision, upgrade
from tests.support.doubles import TOKEN
from tests.support.faults import Fault
from tests.support.runs import sync
from tests.support.servers import free_port


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DIGITALOCEAN_ACCESS_TOKEN", TOKEN)
    monkeypatch.chdir(tmp_path)  # a default database file would land here


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the real entry point; return its exit code, stdout and stderr."""
    try:
        code = cli.main(list(args))
    except SystemExit as exc:  # argparse's own usage errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert TOKEN not in out + err
    return code, out, err


def verdicts(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith(("ok ", "FAIL "))]


def shown(out: str) -> dict[str, tuple[str, str]]:
    """Return the settings table as {setting: (value, source)}; an empty value is ''."""
    table = out.split("\n\n")[1].splitlines()[1:]
    cells = [re.split(r"\s{2,}", line) for line in table]
    return {row[0]: (row[1], row[2]) if len(row) == 3 else ("", row[1]) for row in cells}


def first_image(api: FakeApi) -> int:
    return next(iter(api.world.actions))


def test_check_passes_and_makes_one_request(
    capsys: pytest.CaptureFixture[str], api: FakeApi, engine: Engine, database_url: str
) -> None:
    sync(api, database_url)
    before = len(api.served)
    image = first_image(api)

    code, out, err = run(
        capsys, "check", "--api-url", api.url, "--database-url", database_url, "--image", str(image)
    )

    assert (code, err) == (0, "")
    masked = mask_database_url(database_url)
    assert verdicts(out) == [
        f"ok    images: 1 configured: {image}",
        f"ok    api: {api.url} accepted the token; image {image}: meta.total 45",
        f"ok    database: {masked} is reachable, at schema revision {head_revision()}",
    ]
    [request] = api.served[before:]
    assert (request.path, request.query) == (
        f"/v2/images/{image}/actions",
        {"page": "1", "per_page": "1"},
    )
    table = shown(out)
    assert table["api_url"] == (api.url, "option --api-url")
    assert table["images"] == (str(image), "option --image")
    assert table["database_url"] == (masked, "option --database-url")
    assert table["auto_migrate"] == ("true", "default")
    assert table["token_file"] == ("", "default")
    assert table["token"] == ("present", "env DIGITALOCEAN_ACCESS_TOKEN")


def test_check_json_names_every_source(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    api: FakeApi,
    engine: Engine,
    database_url: str,
    tmp_path: Path,
) -> None:
    config = tmp_path / "c.toml"
    config.write_text("all_images = true\nper_page = 50\n", encoding="utf-8")
    monkeypatch.setenv("DO_IMAGE_ACTIONS_TIMEOUT", "7")

    code, out, _err = run(
        capsys,
        "check",
        "--json",
        "--config",
        str(config),
        "--api-url",
        api.url,
        "--database-url",
        database_url,
    )

    assert code == 0
    answer = json.loads(out)
    assert answer["ok"] is True
    assert answer["config_file"] == {"path": str(config), "found_by": "--config"}
    picked = {name: answer["settings"][name] for name in ("all_images", "timeout", "token")}
    assert picked == {
        "all_images": {"value": True, "source": "file", "where": str(config)},
        "timeout": {"value": 7.0, "source": "env", "where": "DO_IMAGE_ACTIONS_TIMEOUT"},
        "token": {"value": "present", "source": "env", "where": "DIGITALOCEAN_ACCESS_TOKEN"},
    }
    assert answer["settings"]["workers"] == {"value": 4, "source": "default", "where": None}
    assert [c["name"] for c in answer["checks"] if c["ok"]] == ["images", "api", "database"]
    assert [(r.path, r.query) for r in api.served] == [
        ("/v2/images", {"private": "true", "page": "1", "per_page": "1"})
    ]


@pytest.mark.slow
def test_check_shows_a_database_password_masked(
    capsys: pytest.CaptureFixture[str], api: FakeApi
) -> None:
    url = f"postgresql+psycopg://etl:s3cret-pw@127.0.0.1:{free_port()}/warehouse"

    code, out, _err = run(capsys, "check", "--api-url", api.url, "--database-url", url)

    assert code == 1
    assert "s3cret-pw" not in out
    assert "postgresql+psycopg://etl:***@127.0.0.1" in out


def failing_lines(out: str) -> list[str]:
    return [line for line in verdicts(out) if line.startswith("FAIL")]


def test_check_says_what_to_do_for_each_failure(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("DIGITALOCEAN_ACCESS_TOKEN")
    missing = tmp_path / "none.db"

    code, out, _err = run(capsys, "check", "--database-url", f"sqlite:///{missing}")

    assert code == 1
    assert failing_lines(out) == [
        "FAIL  images: no images to sync: list image ids in 'images', pass --image ID, or use "
        "--all-images",
        "FAIL  api: no API token: set DIGITALOCEAN_ACCESS_TOKEN or point token_file at a file "
        "holding it",
        f"FAIL  database: no synced database at sqlite:///{missing}; check database_url, or run "
        "'do-image-actions sync' (or 'migrate') first",
    ]
    assert shown(out)["token"] == ("absent", "default")
    assert not missing.exists()  # reported, never created


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        pytest.param("bad-token", "FAIL  api: the API refused the token (401", id="401"),
        pytest.param("no-api", "FAIL  api: the API at http://127.0.0.1:", id="unreachable"),
        pytest.param("gone-image", "FAIL  api: image 999 was not found (404); remove it", id="404"),
        pytest.param("503", "FAIL  api: GET /v2/images/", id="503-not-retried"),
        pytest.param("echo", "FAIL  api: the API refused the token", id="token-echoed"),
    ],
)
def test_check_reports_an_api_that_fails(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    api: FakeApi,
    engine: Engine,
    database_url: str,
    how: str,
    expected: str,
) -> None:
    url = f"http://127.0.0.1:{free_port()}" if how == "no-api" else api.url
    image = "999" if how == "gone-image" else str(first_image(api))
    if how == "bad-token":
        monkeypatch.setenv("DIGITALOCEAN_ACCESS_TOKEN", "dop_v1_wrong")
    if how == "503":
        api.faults.append(Fault("status", 503))  # type: ignore[attr-defined]
    if how == "echo":  # an error body quoting the Authorization header
        api.faults.append(Fault("echo", 401))  # type: ignore[attr-defined]

    code, out, _err = run(
        capsys, "check", "--api-url", url, "--database-url", database_url, "--image", image
    )

    assert code == 1
    [line] = failing_lines(out)
    assert line.startswith(expected), line
    assert len(api.served) == (0 if how == "no-api" else 1)  # one request, no retries


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        pytest.param("none", "no synced database at {where}; check database_url", id="none"),
        pytest.param(
            "behind", "{where} is at schema revision 0003, not {head}; run 'do-image-actions "
            "migrate'", id="behind"
        ),
        pytest.param(
            "newer", "{where} is at schema revision '9999', which this version of "
            "do-image-actions does not know (its newest is {head}); upgrade the tool", id="newer"
        ),
    ],
)  # fmt: skip
def test_check_reports_a_schema_that_is_not_the_tools(
    capsys: pytest.CaptureFixture[str], api: FakeApi, database_url: str, state: str, expected: str
) -> None:
    if state != "none":
        engine = open_engine(database_url)
        upgrade(engine, "0003")
        if state == "newer":
            with engine.begin() as conn:
                conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
        engine.dispose()
    image = str(first_image(api))

    code, out, _err = run(
        capsys, "check", "--api-url", api.url, "--database-url", database_url, "--image", image
    )

    assert code == 1
    where = mask_database_url(database_url)
    [line] = failing_lines(out)
    assert line.startswith("FAIL  database: " + expected.format(where=where, head=head_revision()))
    if state == "none" and database_url.startswith("sqlite"):
        assert not Path(database_url.removeprefix("sqlite:///")).exists()


@pytest.mark.parametrize(
    "json_flag", [pytest.param([], id="text"), pytest.param(["--json"], id="json")]
)
def test_check_with_invalid_settings_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], json_flag: list[str]
) -> None:
    code, out, err = run(capsys, "check", "--per-page", "0", *json_flag)

    assert code == 2
    assert "--per-page must be from 1 to 200, not 0" in err
    if json_flag:
        assert json.loads(out) == {"ok": False, "error": "--per-page must be from 1 to 200, not 0"}
