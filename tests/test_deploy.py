"""The systemd units and Kubernetes manifests in deploy/: valid, hardened, and they run the tool."""

from __future__ import annotations

import os
import shlex
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from etl import EXIT_CODES, OK_OUTCOMES
from etl.config import SETTINGS, TOKEN_ENV, env_name
from etl.fake import FakeApi
from etl.store.database import SQLITE_BUSY_TIMEOUT_MS
from tests.support.doubles import TOKEN

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
SERVICE = DEPLOY / "systemd" / "do-image-actions.service"
TIMER = DEPLOY / "systemd" / "do-image-actions.timer"
MANIFESTS = sorted((DEPLOY / "kubernetes").glob("*.yaml"))
SCRIPT = Path(sys.executable).with_name("do-image-actions")  # the console script pip made
# The oldest Kubernetes with podFailurePolicy GA, and a recent one; both bundled offline.
KUBERNETES_VERSIONS = ("1.31.0", "1.35.0")
# Exit codes that are no failure for a scheduler: deferred and locked out (the API's rule).
QUIET_EXIT_CODES = {EXIT_CODES[outcome] for outcome in OK_OUTCOMES} - {0}
# What a stop may take: two seconds, or one statement waiting out SQLite's busy timeout.
STOP_SECONDS = 2 + SQLITE_BUSY_TIMEOUT_MS / 1000


def unit_values(path: Path) -> dict[str, list[str]]:
    """Return each key's values (a key may repeat: Environment=, SystemCallFilter=)."""
    values: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            values.setdefault(key, []).append(value)
    return values


def installed_units(folder: Path) -> tuple[Path, Path]:
    """Copy the units with ExecStart pointing at this venv's console script (verify needs it)."""
    folder.mkdir()
    service, timer = folder / SERVICE.name, folder / TIMER.name
    shutil.copy(TIMER, timer)
    [command] = unit_values(SERVICE)["ExecStart"]
    text = SERVICE.read_text().replace(command.split()[0], str(SCRIPT), 1)
    service.write_text(text)
    return service, timer


def test_systemd_units_pass_systemd_analyze_verify_without_a_warning(tmp_path: Path) -> None:
    service, timer = installed_units(tmp_path / "units")

    verified = subprocess.run(
        ["systemd-analyze", "verify", str(service), str(timer)],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip

    assert (verified.returncode, verified.stdout, verified.stderr) == (0, "", "")


def test_systemd_service_is_hardened(tmp_path: Path) -> None:
    service, _timer = installed_units(tmp_path / "units")
    values = unit_values(SERVICE)

    # systemd's own score, 0 (locked down) to 10 (unprotected); 2 or less is "OK".
    scored = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--threshold=20", str(service)],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert scored.returncode == 0, scored.stdout[-400:]
    expected = {
        "Type": ["oneshot"],
        "DynamicUser": ["yes"],
        "ProtectSystem": ["strict"],
        "ProtectHome": ["yes"],
        "NoNewPrivileges": ["yes"],
        "PrivateTmp": ["yes"],
        "RestrictAddressFamilies": ["AF_INET AF_INET6 AF_UNIX"],
        "StateDirectory": ["do-image-actions"],
        "LoadCredential": ["token:/etc/do-image-actions/token"],
    }
    assert {key: values.get(key) for key in expected} == expected
    assert values["SystemCallFilter"][0] == "@system-service"


def test_systemd_service_timing_and_exit_codes_match_the_tool() -> None:
    values = unit_values(SERVICE)
    timer = unit_values(TIMER)

    assert {int(code) for code in values["SuccessExitStatus"][0].split()} == QUIET_EXIT_CODES
    assert STOP_SECONDS <= int(values["TimeoutStopSec"][0].removesuffix("s")) <= STOP_SECONDS + 10
    assert (timer["OnCalendar"], timer["Persistent"]) == (["*:0/5"], ["true"])
    assert 0 < int(timer["RandomizedDelaySec"][0]) < 5 * 60


@pytest.mark.slow
def test_systemd_service_command_and_environment_sync_for_real(
    api: FakeApi, tmp_path: Path
) -> None:
    """Run ExecStart= with the unit's Environment=, its specifiers filled in as systemd would."""
    values = unit_values(SERVICE)
    credentials, state = tmp_path / "credentials", tmp_path / "state"
    credentials.mkdir()
    (state / values["StateDirectory"][0]).mkdir(parents=True)
    token = credentials / values["LoadCredential"][0].split(":")[0]
    token.write_text(TOKEN + "\n")
    token.chmod(0o400)  # as systemd hands a credential over
    config = tmp_path / "config.toml"
    config.write_text(f'api_url = "{api.url}"\nimages = {list(api.world.actions)}\n')
    [command] = values["ExecStart"]
    argv = shlex.split(command)
    argv[0], argv[argv.index("--config") + 1] = str(SCRIPT), str(config)
    environ = dict(
        line.replace("%d", str(credentials)).replace("%S", str(state)).split("=", 1)
        for line in values["Environment"]
    )
    assert set(environ) <= {env_name(setting) for setting in SETTINGS}

    ran = subprocess.run(
        argv, env={"PATH": os.environ["PATH"], **environ},
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip

    assert (ran.returncode, ran.stderr) == (0, "")  # -q: not even a warning about the token
    database = state / "do-image-actions" / "do_image_actions.db"
    with sqlite3.connect(database) as conn:
        [(count,)] = conn.execute("SELECT count(*) FROM image_actions").fetchall()
    assert count == sum(len(actions) for actions in api.world.actions.values())


def load_manifests() -> list[dict[str, Any]]:
    return [doc for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_kubernetes_manifests_are_valid_against_the_schemas(version: str) -> None:
    manifests = load_manifests()

    assert sorted(doc["kind"] for doc in manifests) == ["CronJob", "Secret"]
    for doc in manifests:
        # strict: an unknown or misspelt field is an error, not silently dropped.
        kubernetes_validate.validate(doc, version, strict=True)


def test_kubernetes_cronjob_runs_the_tool_as_documented() -> None:
    by_kind = {doc["kind"]: doc for doc in load_manifests()}
    cronjob, secret = by_kind["CronJob"]["spec"], by_kind["Secret"]
    job = cronjob["jobTemplate"]["spec"]
    pod = job["template"]["spec"]
    [container] = pod["containers"]

    assert (cronjob["schedule"], cronjob["concurrencyPolicy"]) == ("*/5 * * * *", "Forbid")
    assert (cronjob["successfulJobsHistoryLimit"], cronjob["failedJobsHistoryLimit"]) == (3, 5)
    assert job["backoffLimit"] == 1
    assert pod["terminationGracePeriodSeconds"] == int(
        unit_values(SERVICE)["TimeoutStopSec"][0].removesuffix("s")
    )
    # Deferred and locked-out runs are never retried at once; neither are bad settings.
    [fail_job] = [rule for rule in job["podFailurePolicy"]["rules"] if "onExitCodes" in rule]
    assert fail_job["action"] == "FailJob"
    assert set(fail_job["onExitCodes"]["values"]) == QUIET_EXIT_CODES | {2}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert set(container["resources"]) == {"requests", "limits"}
    assert container["command"][:2] == ["do-image-actions", "sync"]
    # Every variable is one the tool reads; every secret key it names exists.
    known = {env_name(setting) for setting in SETTINGS} | {TOKEN_ENV}
    assert {var["name"] for var in container["env"]} <= known
    refs = [var["valueFrom"]["secretKeyRef"] for var in container["env"] if "valueFrom" in var]
    assert {ref["name"] for ref in refs} == {secret["metadata"]["name"]}
    assert {ref["key"] for ref in refs} == set(secret["stringData"])
    assert TOKEN_ENV in {var["name"] for var in container["env"] if "valueFrom" in var}
