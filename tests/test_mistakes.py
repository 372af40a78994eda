"""A new user's mistakes: one sentence naming the fix, the right exit code, nothing touched."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from sqlalchemy import Engine, inspect, text

from etl import cli
from etl.database import open_engine
from etl.database_url import mask_database_url
from etl.fake import FakeApi
from tests.conftest import TOKEN
from tests.rows import read_rows
from tests.servers import free_port

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
    assert {served.path.split("/")[2] for served in api.served} == {"images"}  # no /v2/v2/


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
