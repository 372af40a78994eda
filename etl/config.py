"""Load settings from a TOML file, then the environment, then command-line options."""

from __future__ import annotations

import ipaddress
import logging
import os
import stat
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from etl.database_url import DEFAULT_DATABASE_URL, check_database_url
from etl.errors import ConfigError

logger = logging.getLogger(__name__)

TOKEN_ENV = "DIGITALOCEAN_ACCESS_TOKEN"  # noqa: S105  (a variable name, not a secret)
ENV_PREFIX = "DO_IMAGE_ACTIONS_"
DEFAULT_API_URL = "https://api.digitalocean.com"
MAX_PER_PAGE = 200  # the API's ceiling; also 10x fewer requests than its default of 20
LOG_FORMATS = ("text", "json")
STRATEGIES = ("auto", "feed", "per-image")
MAX_WORKERS = 32  # past this the rate limit, not concurrency, is the wall
MAX_IMAGE_ID = 2**63 - 1  # ids are stored as BIGINT: a larger one would fail mid-run
API_VERSION_PATH = "/v2"  # DigitalOcean documents the base URL with it; our paths carry it
# Command-line options whose name is not --setting-name.
OPTION_NAMES = {"images": "--image", "auto_migrate": "--no-migrate"}


@dataclass(frozen=True)
class Source:
    """Where a setting's value came from: a default, a file, a variable or an option."""

    kind: str  # "default", "file", "env" or "option"
    where: str = ""  # the file's path, the variable's or the option's name

    def __str__(self) -> str:
        return f"{self.kind} {self.where}".rstrip()


@dataclass(frozen=True)
class Settings:
    """Everything a run needs to know; the token never shows in repr."""

    database_url: str = DEFAULT_DATABASE_URL
    api_url: str = DEFAULT_API_URL
    images: tuple[int, ...] = ()
    all_images: bool = False
    per_page: int = MAX_PER_PAGE
    timeout: float = 30.0
    max_attempts: int = 6
    max_retry_wait: float = 120.0
    max_total_wait: float = 600.0
    token_file: str | None = None
    auto_migrate: bool = True
    workers: int = 4
    helper_process: bool = True  # see etl.sync.preparer
    rate_limit_per_minute: int = 250
    rate_limit_per_hour: int = 5000
    min_ratelimit_remaining: int = 100
    max_rejected: int | None = None
    log_format: str = "text"
    metrics_file: str | None = None
    max_response_bytes: int = 32 * 1024 * 1024
    strategy: str = "auto"
    audit_images_per_run: int | None = None  # None: ceil(images / 288), at least 1
    token: str | None = field(default=None, repr=False)

    def require_token(self) -> str:
        """Return the API token.

        Raises:
            ConfigError: no token was given by the environment or a token file.
        """
        if not self.token:
            raise ConfigError(
                f"no API token: set {TOKEN_ENV} or point token_file at a file holding it"
            )
        return self.token


def _positive_int(name: str, value: Any, *, low: int = 1, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be a whole number, not {value!r}")
    if value < low or (high is not None and value > high):
        bounds = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise ConfigError(f"{name} must be {bounds}, not {value}")
    return value


def _positive_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be a number of seconds, not {value!r}")
    if not value > 0:
        raise ConfigError(f"{name} must be more than 0 seconds, not {value}")
    return float(value)


def is_loopback_host(host: str | None) -> bool:
    """Return whether ``host`` names this machine (localhost or a loopback address)."""
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_api_url(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{name} must be a URL such as {DEFAULT_API_URL!r}")
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigError(f"{name} must be an absolute https URL such as {DEFAULT_API_URL!r}")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise ConfigError(
            f"{name} must use https (plain http would expose the token); "
            "http is accepted only for a loopback address"
        )
    if parts.query or parts.fragment:
        raise ConfigError(f"{name} must not carry a query or fragment, only scheme, host and path")
    # The client appends /v2/... itself, so the documented https://api.digitalocean.com/v2
    # would request /v2/v2/...: take the suffix off rather than refuse what the docs show.
    return value.rstrip("/").removesuffix(API_VERSION_PATH)


def _check_images(name: str, value: Any) -> tuple[int, ...] | str:
    if value == "all":
        return "all"  # load_settings turns this into all_images = true
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, list | tuple):
        raise ConfigError(
            f'{name} must be a list of image ids such as [7555620, 62137902], or "all"'
        )
    images: list[int] = []
    for item in value:
        if isinstance(item, str) and item.isascii() and item.isdigit():
            item = int(item)
        if isinstance(item, bool) or not isinstance(item, int) or not 1 <= item <= MAX_IMAGE_ID:
            raise ConfigError(
                f"{name} holds {item!r}; image ids are positive whole numbers up to "
                f"{MAX_IMAGE_ID} (2^63-1); check the id"
            )
        if item not in images:
            images.append(item)
    return tuple(images)


def _check_path(name: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{name} must be a file path")
    return value


def _check_strategy(name: str, value: Any) -> str:
    if value not in STRATEGIES:
        raise ConfigError(f"{name} must be one of {', '.join(STRATEGIES)}, not {value!r}")
    return str(value)


def _check_log_format(name: str, value: Any) -> str:
    if value not in LOG_FORMATS:
        raise ConfigError(f"{name} must be one of {', '.join(LOG_FORMATS)}, not {value!r}")
    return str(value)


def _check_bool(name: str, value: Any) -> bool:
    if isinstance(value, str) and value.lower() in ("1", "true", "yes", "0", "false", "no"):
        return value.lower() in ("1", "true", "yes")
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, not {value!r}")
    return value


Checker = Callable[[str, Any], Any]

# One row per setting: how to check it, and how to read it from a string (environment).
SETTINGS: dict[str, tuple[Checker, Callable[[str], Any]]] = {
    "database_url": (check_database_url, str),
    "api_url": (_check_api_url, str),
    "images": (_check_images, str),
    "all_images": (_check_bool, str),
    "per_page": (lambda n, v: _positive_int(n, v, high=MAX_PER_PAGE), int),
    "timeout": (_positive_float, float),
    "max_attempts": (lambda n, v: _positive_int(n, v, high=20), int),
    "max_retry_wait": (_positive_float, float),
    "max_total_wait": (_positive_float, float),
    "token_file": (_check_path, str),
    "auto_migrate": (_check_bool, str),
    "workers": (lambda n, v: _positive_int(n, v, high=MAX_WORKERS), int),
    "helper_process": (_check_bool, str),
    "rate_limit_per_minute": (_positive_int, int),
    "rate_limit_per_hour": (_positive_int, int),
    "min_ratelimit_remaining": (lambda n, v: _positive_int(n, v, low=0), int),
    "max_rejected": (lambda n, v: _positive_int(n, v, low=0), int),
    "log_format": (_check_log_format, str),
    "metrics_file": (_check_path, str),
    "max_response_bytes": (lambda n, v: _positive_int(n, v, low=1024), int),
    "strategy": (_check_strategy, str),
    "audit_images_per_run": (lambda n, v: _positive_int(n, v, low=0), int),
}
assert set(SETTINGS) == {f.name for f in fields(Settings)} - {"token"}  # noqa: S101


def env_name(setting: str) -> str:
    """Return the environment variable that sets ``setting``."""
    return ENV_PREFIX + setting.upper()


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} does not exist; check the --config path") from exc
    except IsADirectoryError as exc:
        raise ConfigError(
            f"config file {path} is a folder, not a file; point --config at the TOML file"
        ) from exc
    except OSError as exc:
        raise ConfigError(
            f"config file {path} cannot be read ({exc.strerror}); fix the path or its permissions"
        ) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {path} is not UTF-8 text; point --config at a TOML file"
        ) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML ({exc}); fix the syntax") from exc
    if "token" in data:
        raise ConfigError(
            f"config file {path} sets 'token'; never put the token in a file others may read: "
            f"set {TOKEN_ENV} or token_file instead"
        )
    unknown = sorted(set(data) - set(SETTINGS))
    if unknown:
        raise ConfigError(
            f"config file {path} has unknown setting {unknown[0]!r}; "
            f"valid settings are {', '.join(SETTINGS)}"
        )
    return {key: SETTINGS[key][0](f"{key} (in {path})", value) for key, value in data.items()}


def _read_environ(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, (check, parse) in SETTINGS.items():
        raw = environ.get(env_name(key))
        if raw is None:
            continue
        label = env_name(key)
        try:
            parsed = parse(raw)
        except ValueError as exc:
            raise ConfigError(f"{label}={raw!r} is not a valid {key}") from exc
        values[key] = check(label, parsed)
    return values


def _read_token(token_file: str | None, environ: Mapping[str, str]) -> tuple[str | None, Source]:
    token = environ.get(TOKEN_ENV, "").strip()
    source = Source("env", TOKEN_ENV) if token else Source("default")
    if not token and token_file:
        path = Path(token_file)
        try:
            token = path.read_text(encoding="utf-8").strip()
            mode = path.stat().st_mode
        except OSError as exc:
            raise ConfigError(
                f"token_file {token_file} cannot be read ({exc.strerror}); fix the path or its "
                "permissions"
            ) from exc
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            logger.warning(
                "token_file %s can be read by other users; run chmod 600 on it", token_file
            )
        source = Source("file", token_file) if token else Source("default")
    if token and any(ch.isspace() for ch in token):
        raise ConfigError("the API token contains white space; check how it was stored")
    if token and not (token.isascii() and token.isprintable()):
        raise ConfigError(
            "the API token holds characters an HTTP header cannot carry; check how it was stored"
        )
    return token or None, source


def load_settings(
    path: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Return settings from ``path`` (TOML), then ``environ``, then ``overrides``.

    Later sources win. ``overrides`` hold command-line options; ``None`` values are ignored.

    Raises:
        ConfigError: a file, variable or option is invalid; the message names it.
    """
    return load_settings_and_sources(path, environ, overrides)[0]


def load_settings_and_sources(
    path: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> tuple[Settings, dict[str, Source]]:
    """Return settings as load_settings does, and where each came from (``token`` included).

    Raises:
        ConfigError: a file, variable or option is invalid; the message names it.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    sources = {name: Source("default") for name in SETTINGS}
    if path is not None:
        from_file = _read_toml(Path(path))
        values.update(from_file)
        sources.update(dict.fromkeys(from_file, Source("file", str(path))))
    from_env = _read_environ(environ)
    values.update(from_env)
    sources.update({name: Source("env", env_name(name)) for name in from_env})
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key not in SETTINGS:
            raise ConfigError(f"unknown option {key}")
        option = OPTION_NAMES.get(key, f"--{key.replace('_', '-')}")
        values[key] = SETTINGS[key][0](option, value)
        sources[key] = Source("option", option)
    if values.get("images") == "all":
        values["images"] = ()
        values["all_images"] = True
        sources["all_images"] = sources["images"]
    settings = Settings(**values)
    token, sources["token"] = _read_token(settings.token_file, environ)
    return replace(settings, token=token), sources
