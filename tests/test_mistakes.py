"""A new user's mistakes: one sentence naming the fix, the right exit code, nothing touched."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from sqlalchemy import Engine, insert, inspect, select, text

from etl.database_url import mask_database_url
from etl.fake import FakeApi
from etl.ops import cli
from etl.store.database import open_engine
from etl.store.schema import sync_runs
from tests.support.databases import SERVER_DIALECT_PARAMS, SERVERS
from tests.support.doubles import TOKEN
from tests.support.rows import read_rows
from tests.support.servers import free_port

ACTIONS = 135  # the `world` fixture: 3 images x 45 actions


@pytest.fixture(autouse=True)
def _token_and_logging(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Give main() a token and a scratch cwd; undo the handlers it installs on the root logger."""
    monkeypatch.setenv("DIGITALOCEAN_ACCESS_TOKEN", TOKEN)
    monkeypatch.chdir(tmp_path)  # a default database file would land here, not in the repo
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the real entry point; return its exit code, stdout and stderr."""
    try:
        code = cli.main(list(args))
    except SystemExit as exc:  # argparse's own usage errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    assert TOKEN not in out + err
    return code, out, err


def sync_args(api: FakeApi, url: str, *extra: str, api_url: str | None = None) -> list[str]:
    images = [arg for image in api.world.actions for arg in ("--image", str(image))]
    return ["sync", "--api-url", api_url or api.url, "--database-url", url, *images, *extra]


def table_names(url: str) -> list[str]:
    engine = open_engine(url)
    try:
        return sorted(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def row_count(url: str) -> int:
    engine = open_engine(url)
    try:
        return len(read_rows(engine))
    finally:
        engine.dispose()


def one_error(err: str) -> str:
    """Return the only line of stderr, which must be an error."""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert " ERROR etl: " in lines[0] or ": error: " in lines[0], err
    return lines[0]


@pytest.mark.parametrize("suffix", [pytest.param("/v2", id="v2"), pytest.param("/v2/", id="v2-")])
def test_api_url_as_documented_with_v2_syncs(
    capsys: pytest.CaptureFixture[str], api: FakeApi, tmp_path: Path, suffix: str
) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"

    code, _out, err = run(capsys, *sync_args(api, url, api_url=api.url + suffix))

    assert code == 0, err
    assert row_count(url) == ACTIONS
    assert {served.path.split("/")[2] for served in api.served} <= {
        "images",
        "actions",
    }  # no /v2/v2/


@pytest.mark.parametrize(
    ("where", "value"),
    [
        pytest.param("option", "9223372036854775808", id="option-2^63"),
        pytest.param("toml", "[9223372036854775808]", id="toml-2^63"),
        pytest.param("toml", '["99999999999999999999"]', id="toml-string"),
        pytest.param("env", "1,9223372036854775808", id="env-2^63"),
    ],
)
def test_image_id_beyond_bigint_is_refused_before_anything(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    api: FakeApi,
    tmp_path: Path,
    where: str,
    value: str,
) -> None:
    db = tmp_path / "x.db"
    args = ["sync", "--api-url", api.url, "--database-url", f"sqlite:///{db}"]
    if where == "option":
        args += ["--image", value]
    elif where == "toml":
        (tmp_path / "c.toml").write_text(f"images = {value}\n")
        args += ["--config", str(tmp_path / "c.toml")]
    else:
        monkeypatch.setenv("DO_IMAGE_ACTIONS_IMAGES", value)

    code, _out, err = run(capsys, *args)

    assert code == 2
    assert "image ids are positive whole numbers up to 9223372036854775807" in one_error(err)
    assert api.served == []
    assert not db.exists()  # so no sync_runs row either


@pytest.mark.parametrize(
    ("url", "message"),
    [
        pytest.param(
            "postgres://postgres@127.0.0.1/test", "write postgresql+psycopg:// instead", id="heroku"
        ),
        pytest.param("mysql://root@127.0.0.1/test", "write mysql+pymysql://", id="mysql-bare"),
        pytest.param("sqlite://", "in-memory SQLite database", id="sqlite-no-path"),
        pytest.param("sqlite:///:memory:", "in-memory SQLite database", id="sqlite-memory"),
        pytest.param("duckdb://", "in-memory DuckDB database", id="duckdb-no-path"),
        pytest.param("duckdb:///:memory:", "in-memory DuckDB database", id="duckdb-memory"),
        pytest.param("postgresq://u@h/db", "unknown database kind 'postgresq'", id="typo"),
    ],
)
def test_unusable_database_url_is_refused_before_any_request(
    capsys: pytest.CaptureFixture[str], api: FakeApi, url: str, message: str
) -> None:
    code, _out, err = run(capsys, *sync_args(api, url))

    assert code == 2
    assert message in one_error(err)
    assert api.served == []


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        pytest.param("directory", "is a folder, not a file", id="directory"),
        pytest.param("binary", "is not UTF-8 text", id="binary"),
        pytest.param("through-a-file", "cannot be read (Not a directory)", id="through-a-file"),
    ],
)
def test_config_that_is_no_readable_file_is_one_sentence(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, kind: str, message: str
) -> None:
    path = tmp_path / "c.toml"
    if kind == "directory":
        path.mkdir()
    elif kind == "binary":
        path.write_bytes(b"\xff\xfe\x00 not text")
    else:
        path.write_text("")
        path = path / "c.toml"

    code, _out, err = run(capsys, "status", "--config", str(path))

    assert code == 2
    assert message in one_error(err)


def test_metrics_file_in_a_missing_folder_warns_and_keeps_the_sync_exit_code(
    capsys: pytest.CaptureFixture[str], api: FakeApi, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    metrics = tmp_path / "no" / "m.prom"

    code, out, err = run(capsys, *sync_args(api, url, "--metrics-file", str(metrics), "-q"))

    assert code == 0
    assert out.splitlines()[-1].startswith("total succeeded")
    assert len(err.splitlines()) == 1
    assert f" WARNING etl: metrics_file {metrics} cannot be written" in err
    assert row_count(url) == ACTIONS


def missing_server_database(dialect: str) -> str:
    """Return a URL on a running server naming a database that does not exist."""
    return re.sub(r"/\w+$", "/dia_no_such_database", SERVERS[dialect])


@pytest.mark.parametrize("command", ["status", "report"])
def test_reading_where_no_sync_ever_ran_creates_nothing(
    capsys: pytest.CaptureFixture[str], database_url: str, command: str
) -> None:
    """A fresh database: a missing SQLite file, or an empty PostgreSQL/MariaDB database."""
    code, out, err = run(capsys, command, "--database-url", database_url)

    assert code == 1
    assert out == ""
    masked = mask_database_url(database_url)
    assert f"no synced database at {masked}; check database_url, or run" in one_error(err)
    if database_url.startswith("sqlite"):
        assert not Path(database_url.removeprefix("sqlite:///")).exists()
    else:
        assert table_names(database_url) == []


@pytest.mark.parametrize("dialect", SERVER_DIALECT_PARAMS)
def test_reading_a_database_the_server_does_not_have(
    capsys: pytest.CaptureFixture[str], dialect: str
) -> None:
    url = missing_server_database(dialect)

    code, _out, err = run(capsys, "status", "--database-url", url)

    assert code == 1
    assert f"no synced database at {mask_database_url(url)}" in one_error(err)


def test_migrate_a_database_a_newer_tool_migrated(
    capsys: pytest.CaptureFixture[str], engine: Engine, database_url: str
) -> None:
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'ffff_future'"))

    code, _out, err = run(capsys, "migrate", "--database-url", database_url)

    assert code == 1
    assert (
        "the database is at schema revision 'ffff_future', which this version of "
        "do-image-actions does not know; upgrade the tool"
    ) in one_error(err)


@pytest.mark.parametrize("command", ["migrate", "sync"])
def test_migrations_refuse_a_table_someone_else_made_and_leave_nothing(
    capsys: pytest.CaptureFixture[str], api: FakeApi, database_url: str, command: str
) -> None:
    theirs = open_engine(database_url)
    with theirs.begin() as conn:
        conn.execute(text("CREATE TABLE image_actions (id INTEGER PRIMARY KEY, note TEXT)"))
    theirs.dispose()
    args = sync_args(api, database_url) if command == "sync" else [command]
    args += ["--database-url", database_url] if command == "migrate" else []

    code, _out, err = run(capsys, *args)

    assert table_names(database_url) == ["image_actions"]  # no alembic_version left behind
    assert api.served == []
    assert code == 1
    assert (
        f"{mask_database_url(database_url)} already holds image_actions, made by something "
        "other than do-image-actions"
    ) in err
    assert len(err.splitlines()) == 1, err


HOSTILE_PASSWORDS = ["Zq7@Kx9:Lm3/Np5%Rt2", "Ab1:Cd2@@Ef3", "Gh4/Ij5?Kl6#Mn7", "Op8%40Qr9 St0"]


@pytest.mark.parametrize(
    "encoded", [pytest.param(True, id="encoded"), pytest.param(False, id="raw")]
)
@pytest.mark.parametrize("password", HOSTILE_PASSWORDS)
def test_hostile_database_passwords_never_show(
    capsys: pytest.CaptureFixture[str], password: str, encoded: bool
) -> None:
    written = quote(password, safe="") if encoded else password
    url = f"postgresql+psycopg://etl:{written}@127.0.0.1:{free_port()}/warehouse"  # nobody there
    fragments = re.findall(r"[A-Z][a-z]\d", password)

    code, out, err = run(capsys, "status", "--database-url", url)

    assert code in (1, 2)  # refused as unreachable, or as a raw '@' to percent-encode
    one_error(err)
    for shown in (out + err, mask_database_url(url)):
        assert [fragment for fragment in fragments if fragment in shown] == []


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["status", "--runs", "0"], id="runs-0"),
        pytest.param(["status", "--runs", "-3"], id="runs-negative"),
        pytest.param(["status", "--runs", "many"], id="runs-word"),
        pytest.param(["status", "--max-age", ""], id="max-age-empty"),
        pytest.param(["status", "--max-age", "0"], id="max-age-0"),
        pytest.param(["status", "--max-age", "0h"], id="max-age-0h"),
        pytest.param(["report", "--stuck-after", ""], id="stuck-after-empty"),
        pytest.param(["report", "--stuck-after=-1h"], id="stuck-after-negative"),
    ],
)
def test_bad_command_line_values_are_refused_before_opening_the_database(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, args: list[str]
) -> None:
    db = tmp_path / "x.db"

    code, out, err = run(capsys, *args, "--database-url", f"sqlite:///{db}")

    assert code == 2
    assert out == ""
    assert f"error: argument {args[1].split('=')[0]}: " in err
    assert not db.exists()


@pytest.fixture
def synced(capsys: pytest.CaptureFixture[str], api: FakeApi, tmp_path: Path) -> str:
    """Return the URL of an SQLite database holding one succeeded sync."""
    url = f"sqlite:///{tmp_path / 'synced.db'}"
    assert run(capsys, *sync_args(api, url, "-q"))[0] == 0
    return url


@pytest.mark.parametrize(
    "before", [pytest.param(True, id="before"), pytest.param(False, id="after")]
)
@pytest.mark.parametrize(
    ("option", "check"),
    [
        pytest.param("--database-url", "healthy", id="database-url"),
        pytest.param("--config", "healthy", id="config"),
        pytest.param("-v", logging.DEBUG, id="verbose"),
        pytest.param("-q", logging.WARNING, id="quiet"),
        pytest.param("--log-format", "json", id="log-format"),
    ],
)
def test_global_options_go_before_or_after_the_command(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    synced: str,
    before: bool,
    option: str,
    check: object,
) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f"database_url = {synced!r}\n")
    value = {"--database-url": [synced], "--config": [str(config)], "--log-format": ["json"]}
    given = [option, *value.get(option, [])]
    # The JSON case needs a log line: an error, from a database that is not there.
    where = [] if option in ("--database-url", "--config") else ["--database-url", synced]
    if option == "--log-format":
        where = ["--database-url", f"sqlite:///{tmp_path / 'none.db'}"]
    args = [*given, "status", *where] if before else ["status", *where, *given]

    code, out, err = run(capsys, *args)

    if check == "healthy":
        assert (code, out.splitlines()[0]) == (0, "healthy: the last run (id 1) succeeded")
    elif check == "json":
        assert (code, json.loads(err)["level"]) == (1, "error")
    else:
        assert code == 0
        assert logging.getLogger("etl").level == check


def test_global_options_before_sync_are_not_clobbered_by_its_own_copies(
    capsys: pytest.CaptureFixture[str], api: FakeApi, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    images = [arg for image in api.world.actions for arg in ("--image", str(image))]

    code, _out, err = run(
        capsys, "-v", "--database-url", url, "sync", "--api-url", api.url, *images
    )

    assert code == 0
    assert " DEBUG " in err
    assert row_count(url) == ACTIONS
    assert list(tmp_path.iterdir()) == [tmp_path / "x.db"]  # not the default file in the cwd


@pytest.mark.parametrize(
    ("url", "code", "error"),
    [
        pytest.param("sqlite:///{tmp}/none.db", 1, "no synced database at sqlite:///", id="none"),
        pytest.param(
            "postgresql+psycopg://postgres@127.0.0.1:{port}/x", 1, "check that it is reachable",
            id="unreachable",
        ),
        pytest.param("postgres://u@h/db", 2, "write postgresql+psycopg:// instead", id="config"),
    ],
)  # fmt: skip
def test_status_json_answers_with_an_error_object(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, url: str, code: int, error: str
) -> None:
    url = url.format(tmp=tmp_path, port=free_port())

    got, out, err = run(capsys, "status", "--json", "--database-url", url)

    answer = json.loads(out)
    assert (got, sorted(answer), answer["healthy"]) == (code, ["error", "healthy"], False)
    assert error in answer["error"]
    assert answer["error"] in one_error(err)


def many_runs(url: str, doublings: int) -> None:
    """Copy the sync_runs rows onto themselves ``doublings`` times."""
    engine = open_engine(url)
    columns = [column for column in sync_runs.c if column.name != "id"]
    with engine.begin() as conn:
        for _ in range(doublings):
            conn.execute(insert(sync_runs).from_select(columns, select(*columns)))
    engine.dispose()


def child(*args: str, stdout: int, buffered: bool = False) -> subprocess.Popen[bytes]:
    environ = {**os.environ, "DIGITALOCEAN_ACCESS_TOKEN": TOKEN, "PYTHONUNBUFFERED": "1"}
    if buffered:  # output waits in Python's buffer until a flush, at the latest at exit
        del environ["PYTHONUNBUFFERED"]
    return subprocess.Popen(
        [sys.executable, "-m", "etl", *args], stdout=stdout, stderr=subprocess.PIPE, env=environ
    )


@pytest.mark.slow
def test_status_piped_into_head_stops_quietly(synced: str) -> None:
    many_runs(synced, 10)  # 1024 runs: far more output than a pipe buffers
    process = child("status", "--database-url", synced, "--runs", "1024", stdout=subprocess.PIPE)
    assert process.stdout is not None
    assert process.stderr is not None

    with process:
        first = process.stdout.readline()
        process.stdout.close()  # as `| head -1` does
        err = process.stderr.read().decode()
        process.wait(timeout=60)

    assert first == b"healthy: the last run (id 1024) succeeded\n"
    assert (process.returncode, err) == (0, "")


DEMO = ["demo", "--images", "1", "--actions", "3"]


@pytest.mark.parametrize(
    ("command", "buffered", "code"),
    [
        pytest.param(["status"], False, 0, id="status"),
        pytest.param(["report", "--format", "ndjson"], False, 0, id="report"),
        pytest.param(["migrate"], False, 0, id="migrate"),
        pytest.param(["sync", "--full"], False, 0, id="sync"),  # the sync goes on, and succeeds
        # The demo prints outside the CLI's output function: unbuffered, its run is cut
        # short; buffered, its output meets the closed pipe only at the flush after it.
        pytest.param(DEMO, False, 1, id="demo"),
        pytest.param(DEMO, True, 0, id="demo-buffered"),
    ],
)
@pytest.mark.slow
def test_every_command_survives_a_stdout_closed_before_it_writes(
    api: FakeApi, synced: str, tmp_path: Path, command: list[str], buffered: bool, code: int
) -> None:
    args = [*command, "--database-url", synced]
    if command[0] == "sync":
        args = sync_args(api, synced, "--full")
    elif command[0] == "demo":
        args = [*command, "--database-url", f"sqlite:///{tmp_path / 'demo.db'}"]
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line
    process = child(*args, stdout=write, buffered=buffered)
    os.close(write)

    _out, err = process.communicate(timeout=60)

    assert (process.returncode, err.decode()) == (code, "")
    assert row_count(synced) == ACTIONS
