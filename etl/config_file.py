"""Find the TOML settings file: --config, else DO_IMAGE_ACTIONS_CONFIG, else the user's default."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from etl.errors import ConfigError

CONFIG_ENV = "DO_IMAGE_ACTIONS_CONFIG"
APP_DIR = "do-image-actions"
CONFIG_NAME = "config.toml"


@dataclass(frozen=True)
class ConfigFile:
    """The settings file a command reads, and how it was found."""

    path: Path
    found_by: str  # "--config", "DO_IMAGE_ACTIONS_CONFIG" or "default path"


def default_config_path(environ: Mapping[str, str]) -> Path | None:
    """Return the user's default settings file, whether or not it exists.

    ``$XDG_CONFIG_HOME/do-image-actions/config.toml``, or ``~/.config/...`` when
    XDG_CONFIG_HOME is unset or relative (the XDG spec says to ignore a relative one).
    Only ``environ`` is read, so a caller with no HOME gets no default.
    """
    xdg = environ.get("XDG_CONFIG_HOME", "")
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / APP_DIR / CONFIG_NAME
    home = environ.get("HOME", "")
    if home:
        return Path(home) / ".config" / APP_DIR / CONFIG_NAME
    return None


def find_config_file(explicit: str | Path | None, environ: Mapping[str, str]) -> ConfigFile | None:
    """Return the settings file to read: ``explicit``, else the variable's, else the default's.

    A default path that does not exist is not used; a path given explicitly (option or
    variable) must exist, which the caller's read (or this check) reports.

    Raises:
        ConfigError: DO_IMAGE_ACTIONS_CONFIG names a path where nothing exists.
    """
    if explicit is not None:
        return ConfigFile(Path(explicit), "--config")
    named = environ.get(CONFIG_ENV, "")
    if named:
        if not Path(named).exists():
            raise ConfigError(
                f"{CONFIG_ENV}={named!r} names no file; fix the path or unset {CONFIG_ENV}"
            )
        return ConfigFile(Path(named), CONFIG_ENV)
    default = default_config_path(environ)
    if default is not None and default.exists():
        return ConfigFile(default, "default path")
    return None
