"""The token never shows anywhere; database passwords are masked wherever a URL is shown."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url

from etl.fake import FakeApi, World
from etl.ops import cli
from etl.ops.logs import setup_logging
from tests.support.cli import run_cli, sync_args
from tests.support.databases import SERVER_DIALECT_PARAMS, fresh_database
from tests.support.faults import Fault
from tests.support.scripted import ScriptedApi

SECRET = "dop_v1_RECOGNISABLE_SECRET_5f3a9c0e7b2d4a6f8e1c3b5d7f9a0c2e"
PASSWORD = "Hunter2-db-password"


def outputs_never_show(secret: str, results: list, *paths: Path) -> None:
    for result in results:
        assert secret not in result.stdout
        assert secret not in result.stderr
    for path in paths:
        for file in [path, *path.parent.glob(path.name + "-*")]:  # SQLite's -wal and -shm too
            if file.exists():
                assert secret.encode() not in file.read_bytes(), file


@pytest.mark.slow
def test_the_token_never_appears_in_any_output_file_or_row(tmp_path: Path) -> None:
    world = World.generate(images=2, actions_per_image=30, seed=2)
    db = tmp_path / "s.db"
    url = f"sqlite:///{db}"
    metrics = tmp_path / "m.prom"
    env = {"DIGITALOCEAN_ACCESS_TOKEN": SECRET}
    with ScriptedApi(world, token=SECRET) as api:
        api.faults.extend([Fault("status", 503), Fault("reset"), Fault("truncated")])
        base = sync_args(api, url, "--metrics-file", str(metrics))
        results = [
            run_cli(*base, "-v", env=env),
            run_cli(*base, "-v", "--log-format", "json", "--json", env=env),
            run_cli(*base, "-q", "--full", env=env),
            run_cli(*base, "--image", "404", "-v", env=env),
            run_cli(*base, "--dry-run", "-v", env=env),
            run_cli("status", "--database-url", url, "-v", env=env),
            run_cli("report", "--database-url", url, "--format", "json", "-v", env=env),
            run_cli("migrate", "--database-url", url, "-v", env=env),
        ]
        api.faults.extend([Fault("status", 401), Fault("status", 500)])
        results.append(run_cli(*base, "-v", env=env))
        results.append(run_cli(*base, "--per-page", "0", "-v", env=env))
    wrong = ScriptedApi(world, token="another-token").start()
    try:
        results.append(run_cli(*sync_args(wrong, url), "-v", env=env))  # 401: token refused
    finally:
        wrong.stop()
    results.append(run_cli(*sync_args(api, url), "-v", env=env))  # the API is gone: network error

    assert [r.returncode for r in results] == [0, 0, 0, 3, 0, 0, 0, 0, 1, 2, 1, 1]
    assert any("DEBUG" in r.stderr for r in results)  # the verbose runs really were verbose
    assert metrics.read_text().startswith("# HELP")
    outputs_never_show(SECRET, results, db, metrics)


def test_an_unexpected_error_prints_a_redacted_traceback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DIGITALOCEAN_ACCESS_TOKEN", SECRET)

    def broken(_args: object) -> int:
        raise RuntimeError(f"a bug that quotes the token {SECRET}")

    monkeypatch.setitem(cli.COMMANDS, "migrate", broken)

    code = cli.main(["migrate"])

    err = capsys.readouterr().err
    assert code == cli.EXIT_FAILED
    assert "unexpected error; pages committed so far are kept. Please report this" in err
    assert "Traceback" in err
    assert "a bug that quotes the token ***" in err
    assert SECRET not in err


def test_json_logs_blank_the_token_in_the_message_and_the_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    setup_logging(0, secrets=[SECRET], log_format="json")
    logger = logging.getLogger("etl.test")

    try:
        raise RuntimeError(f"the server echoed Authorization: Bearer {SECRET}")
    except RuntimeError:
        logger.exception("a request with %s failed", SECRET)

    err = capsys.readouterr().err
    [entry] = [json.loads(line) for line in err.splitlines()]
    assert SECRET not in err
    assert (entry["level"], entry["message"]) == ("error", "a request with *** failed")
    assert entry["exception"].endswith("RuntimeError: the server echoed Authorization: Bearer ***")


@contextlib.contextmanager
def mariadb_user(url: URL) -> Iterator[URL]:
    """Yield ``url`` for a new user with PASSWORD (MariaDB checks passwords); drop it after."""
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE USER 'dia_secret'@'%' IDENTIFIED BY '{PASSWORD}'"))
        conn.execute(text(f"GRANT ALL ON {url.database}.* TO 'dia_secret'@'%'"))
    try:
        yield url.set(username="dia_secret")
    finally:
        with admin.connect() as conn:
            conn.execute(text("DROP USER IF EXISTS 'dia_secret'@'%'"))
        admin.dispose()


@pytest.mark.parametrize("dialect", SERVER_DIALECT_PARAMS)
def test_database_passwords_are_masked_everywhere(
    dialect: str, tmp_path: Path, api: FakeApi
) -> None:
    with contextlib.ExitStack() as stack:
        url = make_url(stack.enter_context(fresh_database(dialect, tmp_path)))
        if dialect == "mariadb":
            url = stack.enter_context(mariadb_user(url))
        with_password = url.set(password=PASSWORD).render_as_string(hide_password=False)
        closed_port = url.set(password=PASSWORD, port=1).render_as_string(hide_password=False)

        results = [
            run_cli("migrate", "--database-url", with_password, "-v"),
            run_cli(*sync_args(api, with_password), "-v"),
            run_cli("status", "--database-url", with_password, "-v"),
            run_cli("migrate", "--database-url", closed_port, "-v"),
            run_cli(*sync_args(api, closed_port), "-v"),
        ]

    assert [r.returncode for r in results] == [0, 0, 0, 1, 1]
    assert ":***@" in results[0].stdout
    assert ":***@" in results[3].stderr
    outputs_never_show(PASSWORD, results)
