"""Shared fixtures: a loopback fake API, API clients that never sleep, fresh databases."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from etl.fake import FakeApi, World
from etl.source.client import ApiClient
from tests.support.databases import DIALECT_PARAMS, fresh_database, migrated_engine
from tests.support.doubles import TOKEN, RecordingSleep
from tests.support.scripted import ScriptedApi


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Undo what etl.ops.cli.main does to logging, so no test logs into another's closed stream."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(autouse=True)
def _no_user_config(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Hide the developer's own settings file: commands find a default config by themselves."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.getbasetemp() / "no-user-config"))
    monkeypatch.delenv("DO_IMAGE_ACTIONS_CONFIG", raising=False)


@pytest.fixture
def world() -> World:
    return World.generate(images=3, actions_per_image=45, seed=7)


@pytest.fixture
def api(world: World) -> Iterator[FakeApi]:
    with ScriptedApi(world, token=TOKEN) as fake:
        yield fake


@pytest.fixture
def sleep() -> RecordingSleep:
    return RecordingSleep()


@pytest.fixture
def client(api: FakeApi, sleep: RecordingSleep) -> Iterator[ApiClient]:
    client = ApiClient(base_url=api.url, token=TOKEN, timeout=2.0, max_attempts=4, sleep=sleep)
    yield client
    client.close()


@pytest.fixture(params=DIALECT_PARAMS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with fresh_database(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """An engine on a fresh database migrated to head by the real migrations."""
    engine = migrated_engine(database_url)
    yield engine
    engine.dispose()
