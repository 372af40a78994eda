"""Finding the settings file: --config, then DO_IMAGE_ACTIONS_CONFIG, then the user's default."""

from __future__ import annotations

from pathlib import Path

import pytest

from etl.config_file import ConfigFile, find_config_file
from etl.errors import ConfigError
from tests.support.cli import run_cli


def settings_file(folder: Path, database: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.toml"
    path.write_text(f'database_url = "sqlite:///{database}"\n', encoding="utf-8")
    return path


def test_config_option_wins_over_the_variable_and_the_default(tmp_path: Path) -> None:
    default = settings_file(tmp_path / "xdg" / "do-image-actions", "d.db")
    named = settings_file(tmp_path / "named", "n.db")
    environ = {"XDG_CONFIG_HOME": str(tmp_path / "xdg"), "DO_IMAGE_ACTIONS_CONFIG": str(named)}

    assert find_config_file("given.toml", environ) == ConfigFile(Path("given.toml"), "--config")
    assert find_config_file(None, environ) == ConfigFile(named, "DO_IMAGE_ACTIONS_CONFIG")
    assert find_config_file(None, {"XDG_CONFIG_HOME": str(tmp_path / "xdg")}) == ConfigFile(
        default, "default path"
    )


@pytest.mark.parametrize(
    ("xdg", "home", "expected"),
    [
        pytest.param("xdg", "home", "xdg/do-image-actions/config.toml", id="xdg"),
        pytest.param("", "home", "home/.config/do-image-actions/config.toml", id="home"),
        pytest.param("relative", "home", "home/.config/do-image-actions/config.toml", id="rel"),
    ],
)
def test_the_default_path_is_xdg_then_home(
    tmp_path: Path, xdg: str, home: str, expected: str
) -> None:
    settings_file(tmp_path / "xdg" / "do-image-actions", "x.db")
    settings_file(tmp_path / "home" / ".config" / "do-image-actions", "h.db")
    environ = {"XDG_CONFIG_HOME": xdg and str(tmp_path / xdg), "HOME": str(tmp_path / home)}
    if xdg == "relative":
        environ["XDG_CONFIG_HOME"] = "relative"  # the XDG spec says to ignore it

    found = find_config_file(None, environ)

    assert found == ConfigFile(tmp_path / expected, "default path")


def test_a_default_path_that_does_not_exist_is_not_used(tmp_path: Path) -> None:
    assert find_config_file(None, {"XDG_CONFIG_HOME": str(tmp_path), "HOME": str(tmp_path)}) is None
    assert find_config_file(None, {}) is None


def test_a_variable_naming_no_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"DO_IMAGE_ACTIONS_CONFIG='.*nope\.toml' names no file"):
        find_config_file(None, {"DO_IMAGE_ACTIONS_CONFIG": str(tmp_path / "nope.toml")})


@pytest.mark.slow
def test_commands_read_the_default_file_without_flags(tmp_path: Path) -> None:
    settings_file(tmp_path / ".config" / "do-image-actions", str(tmp_path / "from-home.db"))
    env = {"HOME": str(tmp_path), "XDG_CONFIG_HOME": ""}

    result = run_cli("status", env=env)

    assert result.returncode == 1
    assert f"no synced database at sqlite:///{tmp_path / 'from-home.db'}" in result.stderr
    assert not (tmp_path / "from-home.db").exists()


@pytest.mark.slow
def test_commands_refuse_a_variable_naming_no_file(tmp_path: Path) -> None:
    result = run_cli("status", env={"DO_IMAGE_ACTIONS_CONFIG": str(tmp_path / "gone.toml")})

    assert result.returncode == 2
    assert "DO_IMAGE_ACTIONS_CONFIG=" in result.stderr
    assert "names no file; fix the path or unset DO_IMAGE_ACTIONS_CONFIG" in result.stderr
    assert "Traceback" not in result.stderr
