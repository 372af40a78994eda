"""The Python API as an orchestrator uses it: only names from ``etl``, a real SQLite file.

The fake API (the ``api`` fixture) and its token are the only things from the test side.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from etl import (
    ConfigError,
    RunResult,
    Settings,
    SyncOutcomeError,
    load_settings,
    sync_images,
)
from etl.fake import FakeApi
from tests.support.doubles import TOKEN


def settings_for(api: FakeApi, tmp_path: Path, token: str = TOKEN, **overrides: object) -> Settings:
    environ = {"DIGITALOCEAN_ACCESS_TOKEN": token, "DO_IMAGE_ACTIONS_PER_PAGE": "20"}
    values = {
        "database_url": f"sqlite:///{tmp_path / 'actions.db'}",
        "api_url": api.url,
        "images": list(api.world.actions),
        **overrides,
    }
    return load_settings(environ=environ, overrides=values)


def stored(tmp_path: Path) -> int:
    with sqlite3.connect(tmp_path / "actions.db") as conn:
        return int(conn.execute("SELECT count(*) FROM image_actions").fetchone()[0])


def listed(api: FakeApi) -> int:
    return sum(len(actions) for actions in api.world.actions.values())


def test_sync_images_succeeds_and_stores_every_action(api: FakeApi, tmp_path: Path) -> None:
    result = sync_images(settings_for(api, tmp_path))

    assert (result.outcome, result.exit_code, result.error) == ("succeeded", 0, None)
    assert result.raise_for_outcome() is result
    assert (result.counts.inserted, stored(tmp_path)) == (listed(api), listed(api))


def test_sync_images_returns_a_partial_run_that_raise_for_outcome_raises(
    api: FakeApi, tmp_path: Path
) -> None:
    result = sync_images(settings_for(api, tmp_path, images=[*api.world.actions, 999]))

    assert (result.outcome, result.exit_code) == ("partial", 3)
    assert stored(tmp_path) == listed(api)  # what synced stays committed
    with pytest.raises(SyncOutcomeError, match=r"^sync partial: 1 of 4 images failed: image 999 "):
        result.raise_for_outcome()
    with pytest.raises(SyncOutcomeError) as raised:
        result.raise_for_outcome()
    assert (raised.value.outcome, raised.value.exit_code) == ("partial", 3)
    assert result.raise_for_outcome(ok={"succeeded", "partial"}) is result


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        pytest.param({"token": "dop_v1_revoked"}, "refused the token", id="token-refused"),
        pytest.param(
            {"auto_migrate": False},
            "run 'do-image-actions migrate' first",
            id="database-not-set-up",
        ),
    ],
)
def test_sync_images_returns_a_failed_run_instead_of_raising(
    api: FakeApi, tmp_path: Path, overrides: dict[str, object], reason: str
) -> None:
    result = sync_images(settings_for(api, tmp_path, **overrides))

    assert (result.outcome, result.exit_code) == ("failed", 1)
    assert reason in (result.error or "")
    with pytest.raises(SyncOutcomeError, match=r"^sync failed: ") as raised:
        result.raise_for_outcome()
    assert reason in str(raised.value)


def test_sync_images_returns_a_failed_run_when_the_database_cannot_be_opened(
    api: FakeApi, tmp_path: Path
) -> None:
    database_url = f"sqlite:///{tmp_path / 'no-such-folder' / 'actions.db'}"

    result = sync_images(settings_for(api, tmp_path, database_url=database_url))

    assert (result.outcome, result.exit_code) == ("failed", 1)
    assert "unable to open database file" in (result.error or "")


def test_sync_images_returns_a_deferred_run_that_raise_for_outcome_lets_pass(
    api: FakeApi, tmp_path: Path
) -> None:
    api.hourly_limit = 10  # the budget falls below min_ratelimit_remaining mid-run

    result = sync_images(settings_for(api, tmp_path, min_ratelimit_remaining=5))

    assert (result.outcome, result.exit_code) == ("deferred", 5)
    assert "min_ratelimit_remaining 5" in (result.error or "")
    assert result.raise_for_outcome() is result  # the next scheduled run carries on
    with pytest.raises(SyncOutcomeError, match=r"^sync deferred: "):
        result.raise_for_outcome(ok={"succeeded"})


def test_sync_images_dry_run_writes_nothing(api: FakeApi, tmp_path: Path) -> None:
    settings = settings_for(api, tmp_path)
    sync_images(settings)
    api.world.add_actions(next(iter(api.world.actions)), 2)

    result = sync_images(settings, full=True, dry_run=True)

    assert (result.outcome, result.mode, result.counts.inserted) == ("succeeded", "full", 2)
    assert stored(tmp_path) == listed(api) - 2


@pytest.mark.parametrize(
    ("environ", "overrides", "message"),
    [
        pytest.param({}, {"images": [1]}, "no API token", id="no-token"),
        pytest.param({"DIGITALOCEAN_ACCESS_TOKEN": TOKEN}, {}, "no images to sync", id="no-images"),
    ],
)
def test_sync_images_raises_config_error_before_any_request(
    api: FakeApi,
    tmp_path: Path,
    environ: dict[str, str],
    overrides: dict[str, object],
    message: str,
) -> None:
    url = f"sqlite:///{tmp_path / 'actions.db'}"
    settings = load_settings(
        environ=environ, overrides={"api_url": api.url, "database_url": url, **overrides}
    )

    with pytest.raises(ConfigError, match=message):
        sync_images(settings)
    assert api.served == []
    assert not (tmp_path / "actions.db").exists()


def test_load_settings_raises_config_error_naming_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^--per-page must be from 1 to 200, not 500$"):
        load_settings(environ={}, overrides={"per_page": 500})
    with pytest.raises(ConfigError, match=r"DO_IMAGE_ACTIONS_WORKERS"):
        load_settings(environ={"DO_IMAGE_ACTIONS_WORKERS": "lots"})


def test_the_api_names_are_the_documented_ones() -> None:
    import etl

    assert sorted(etl.__all__) == sorted(
        [
            "EXIT_CODES",
            "OK_OUTCOMES",
            "OUTCOMES",
            "ConfigError",
            "EtlError",
            "ImageResult",
            "RunResult",
            "Settings",
            "SyncOutcomeError",
            "__version__",
            "load_settings",
            "sync_images",
        ]
    )
    assert all(getattr(etl, name) is not None for name in etl.__all__)
    assert RunResult.__module__ == "etl.sync.results"
    with pytest.raises(AttributeError, match="no attribute 'sync_image'"):
        etl.sync_image  # noqa: B018  (a misspelt name fails, as in any module)
