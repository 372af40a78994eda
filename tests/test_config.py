"""load_settings: TOML, then environment, then options; every bad value named with its fix."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from etl.config import (
    SETTINGS,
    TOKEN_ENV,
    Settings,
    Source,
    load_settings,
    load_settings_and_sources,
)
from etl.database_url import mask_database_url
from etl.errors import ConfigError

TOKEN = "dop_v1_configtest"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_load_settings_defaults_without_file_or_environment() -> None:
    assert load_settings(environ={}) == Settings()


def test_load_settings_reads_the_example_config() -> None:
    example = Path(__file__).parents[1] / "config.example.toml"

    assert load_settings(example, environ={}) == Settings()


def test_load_settings_layers_file_then_environment_then_options(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'database_url = "sqlite:///file.db"\nper_page = 50\ntimeout = 5\nimages = [1, 2]\n',
    )
    environ = {
        "DO_IMAGE_ACTIONS_PER_PAGE": "60",
        "DO_IMAGE_ACTIONS_IMAGES": "3, 4",
        "DIGITALOCEAN_ACCESS_TOKEN": TOKEN,
    }

    settings = load_settings(path, environ, overrides={"images": [5], "timeout": None})

    assert settings == Settings(
        database_url="sqlite:///file.db",
        per_page=60,
        timeout=5.0,
        images=(5,),
        token=TOKEN,
    )


def test_settings_repr_never_shows_the_token() -> None:
    settings = load_settings(environ={"DIGITALOCEAN_ACCESS_TOKEN": TOKEN})

    assert settings.token == TOKEN
    assert TOKEN not in repr(settings)


def test_load_settings_reads_the_token_from_a_file(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    path = write(tmp_path, f'token_file = "{token_file}"\n')

    assert load_settings(path, environ={}).token == TOKEN


def test_load_settings_prefers_the_environment_token(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-file")
    token_file.chmod(0o600)

    settings = load_settings(
        environ={"DIGITALOCEAN_ACCESS_TOKEN": TOKEN, "DO_IMAGE_ACTIONS_TOKEN_FILE": str(token_file)}
    )

    assert settings.token == TOKEN


def test_load_settings_warns_about_a_token_file_others_can_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o644)

    with caplog.at_level(logging.WARNING):
        load_settings(environ={"DO_IMAGE_ACTIONS_TOKEN_FILE": str(token_file)})

    assert "can be read by other users; run chmod 600" in caplog.text
    assert TOKEN not in caplog.text


def test_require_token_names_both_ways_to_give_one() -> None:
    with pytest.raises(ConfigError, match="set DIGITALOCEAN_ACCESS_TOKEN or point token_file"):
        load_settings(environ={}).require_token()


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        pytest.param(
            "per_page = 500", r"per_page \(in .*\) must be from 1 to 200, not 500", id="pp"
        ),
        pytest.param("per_page = 0", "must be from 1 to 200, not 0", id="per-page-zero"),
        pytest.param('per_page = "20"', "must be a whole number", id="per-page-str"),
        pytest.param("timeout = -1", "must be more than 0 seconds", id="timeout"),
        pytest.param("max_attempts = 0", "must be from 1 to 20", id="attempts"),
        pytest.param('database_url = "not a url"', "not a valid SQLAlchemy URL", id="db-url"),
        pytest.param('api_url = "ftp://x"', "absolute https URL", id="api-scheme"),
        pytest.param(
            'api_url = "http://api.example.com"', "http is accepted only for a loopback", id="http"
        ),
        pytest.param('api_url = "https://x.example/?a=1"', "query or fragment", id="api-query"),
        pytest.param("images = [0]", "image ids are positive whole numbers", id="image-zero"),
        pytest.param('images = ["abc"]', "image ids are positive", id="image-str"),
        pytest.param("images = 5", "must be a list of image ids", id="images-int"),
        pytest.param(
            "images = [9223372036854775808]", "up to 9223372036854775807", id="image-past-bigint"
        ),
        pytest.param('images = ["\u00b2"]', "image ids are positive", id="image-superscript"),
        pytest.param('database_url = "postgres://u@h/db"', "postgresql\\+psycopg://", id="heroku"),
        pytest.param('database_url = "sqlite://"', "in-memory SQLite", id="sqlite-memory"),
        pytest.param('database_url = "nosuch://u@h/db"', "unknown database kind", id="db-kind"),
        pytest.param(
            'database_url = "postgresql://u:p@ss@h/db"', "raw '@' in its password", id="raw-at"
        ),
        pytest.param(
            'database_url = "postgresql://u:p:w0rd@ss@h:5/db"', "percent-encode", id="bad-port"
        ),
        pytest.param("colour = 1", "unknown setting 'colour'; valid settings are", id="unknown"),
        pytest.param('token = "x"', "never put the token in a file", id="token-in-file"),
        pytest.param("per_page = ", "not valid TOML", id="bad-toml"),
        pytest.param("auto_migrate = 3", "must be true or false", id="bool"),
        pytest.param("workers = 0", "workers .* must be from 1 to 32, not 0", id="workers-zero"),
        pytest.param("workers = 33", "must be from 1 to 32, not 33", id="workers-many"),
        pytest.param("rate_limit_per_minute = 0", "must be at least 1", id="rate-zero"),
        pytest.param('log_format = "xml"', "must be one of text, json", id="log-format"),
    ],
)
def test_load_settings_rejects_bad_file_values(tmp_path: Path, toml: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(write(tmp_path, toml), environ={})


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        pytest.param({"DO_IMAGE_ACTIONS_PER_PAGE": "many"}, "is not a valid per_page", id="pp"),
        pytest.param({"DO_IMAGE_ACTIONS_IMAGES": "1,-2"}, "image ids are positive", id="images"),
        pytest.param({"DO_IMAGE_ACTIONS_AUTO_MIGRATE": "maybe"}, "true or false", id="bool"),
        pytest.param({"DIGITALOCEAN_ACCESS_TOKEN": "a b"}, "contains white space", id="token"),
        pytest.param({"DO_IMAGE_ACTIONS_TOKEN_FILE": "/nonexistent/t"}, "cannot be read", id="tf"),
    ],
)
def test_load_settings_rejects_bad_environment(environ: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(environ=environ)


def test_load_settings_names_the_option_that_is_wrong() -> None:
    with pytest.raises(ConfigError, match="--per-page must be from 1 to 200"):
        load_settings(environ={}, overrides={"per_page": 201})


def test_load_settings_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist; check the --config path"):
        load_settings(tmp_path / "nope.toml", environ={})


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql+psycopg://etl:s3cret@db/prod", "postgresql+psycopg://etl:***@db/prod"),
        ("sqlite:///x.db", "sqlite:///x.db"),
        ("postgresql://etl:p%40ss%2Fw%3Ard@db/prod", "postgresql://etl:***@db/prod"),
        ("postgresql://etl:p@ss@db/prod", "postgresql://etl:***@db/prod"),
        ("postgresql://etl:pa/ss:wd@db:5432/prod", "postgresql://etl:***@db:5432/prod"),
        ("postgresql://etl:p@ss:w0rd@db:5432/prod", "<unparseable database URL>"),
    ],
)
def test_mask_database_url_hides_the_password(url: str, shown: str) -> None:
    assert mask_database_url(url) == shown


@pytest.mark.parametrize(
    "url",
    [
        "https://api.digitalocean.com/v2",
        "https://api.digitalocean.com/v2/",
        "https://api.digitalocean.com/",
    ],
)
def test_api_url_drops_the_documented_v2_suffix(url: str) -> None:
    assert load_settings(environ={"DO_IMAGE_ACTIONS_API_URL": url}).api_url == (
        "https://api.digitalocean.com"
    )


def test_the_largest_bigint_is_a_valid_image_id() -> None:
    settings = load_settings(environ={"DO_IMAGE_ACTIONS_IMAGES": "9223372036854775807"})

    assert settings.images == (2**63 - 1,)


def test_loopback_http_api_url_is_accepted() -> None:
    settings = load_settings(environ={"DO_IMAGE_ACTIONS_API_URL": "http://127.0.0.1:8080/"})

    assert settings.api_url == "http://127.0.0.1:8080"


def test_strategy_and_audit_slice_come_from_file_env_and_option(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('strategy = "feed"\naudit_images_per_run = 7\n')

    from_file = load_settings(path, environ={})
    from_env = load_settings(path, environ={"DO_IMAGE_ACTIONS_STRATEGY": "per-image"})
    from_option = load_settings(path, environ={}, overrides={"strategy": "auto"})

    assert (from_file.strategy, from_file.audit_images_per_run) == ("feed", 7)
    assert (from_env.strategy, from_option.strategy) == ("per-image", "auto")
    assert load_settings(environ={}).strategy == "auto"
    with pytest.raises(ConfigError, match=r"^DO_IMAGE_ACTIONS_STRATEGY must be one of auto, feed"):
        load_settings(environ={"DO_IMAGE_ACTIONS_STRATEGY": "fast"})


def test_load_settings_and_sources_names_where_each_value_came_from(tmp_path: Path) -> None:
    path = write(tmp_path, 'per_page = 50\ntimeout = 5\nimages = "all"\n')
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    environ = {
        "DO_IMAGE_ACTIONS_PER_PAGE": "60",
        "DO_IMAGE_ACTIONS_TOKEN_FILE": str(token_file),
    }
    overrides = {"database_url": "sqlite:///o.db", "auto_migrate": False, "workers": None}

    settings, sources = load_settings_and_sources(path, environ, overrides)

    assert settings == load_settings(path, environ, overrides)
    assert {name: str(source) for name, source in sources.items() if source.kind != "default"} == {
        "per_page": "env DO_IMAGE_ACTIONS_PER_PAGE",
        "timeout": f"file {path}",
        "images": f"file {path}",
        "all_images": f"file {path}",
        "token_file": "env DO_IMAGE_ACTIONS_TOKEN_FILE",
        "token": f"file {token_file}",
        "database_url": "option --database-url",
        "auto_migrate": "option --no-migrate",
    }
    assert set(sources) == {*SETTINGS, "token"}


@pytest.mark.parametrize(
    ("environ", "source"),
    [
        pytest.param({"DIGITALOCEAN_ACCESS_TOKEN": TOKEN}, Source("env", TOKEN_ENV), id="env"),
        pytest.param({}, Source("default"), id="absent"),
    ],
)
def test_load_settings_and_sources_names_the_tokens_source(
    environ: dict[str, str], source: Source
) -> None:
    assert load_settings_and_sources(environ=environ)[1]["token"] == source
