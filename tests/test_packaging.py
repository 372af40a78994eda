"""What a user installs: the version, the sdist and wheel contents, the API's types for mypy."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SKIP = {".venv", ".git", "build", "dist", ".mypy_cache", ".ruff_cache", ".pytest_cache"}

USER_SCRIPT = """\
from etl import EXIT_CODES, RunResult, Settings, SyncOutcomeError, load_settings, sync_images


def airflow_task(config: str) -> dict[str, int]:
    settings: Settings = load_settings(config, overrides={"workers": 2})
    result: RunResult = sync_images(settings, full=False, dry_run=False)
    try:
        result.raise_for_outcome(ok={"succeeded", "deferred"})
    except SyncOutcomeError as exc:
        raise RuntimeError(f"exit {exc.exit_code}: {exc.outcome}") from exc
    return {"inserted": result.counts.inserted, "code": EXIT_CODES[result.outcome]}
"""

# Misuse that only types can catch: mypy must name each line.
MISUSE_SCRIPT = """\
from etl import load_settings, sync_images

result = sync_images(load_settings(), full="yes")
code: str = result.exit_code
sync_images("/etc/do-image-actions.toml")
"""


@pytest.mark.slow
def test_version_prints_the_installed_version() -> None:
    script = Path(sys.executable).with_name("do-image-actions")

    shown = subprocess.run(
        [str(script), "--version"], capture_output=True, text=True, check=True, timeout=60
    )

    assert shown.stdout == f"do-image-actions {version('do-image-actions')}\n"


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the sdist, then the wheel from it, as ``python -m build`` does for a release."""
    work = tmp_path_factory.mktemp("dist")
    # A copy, so the build's egg-info and build/ never land in the checkout.
    source = work / "source"
    shutil.copytree(
        ROOT, source, ignore=lambda _d, names: [n for n in names if n in SKIP or "egg-info" in n]
    )
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(work / "out"), source],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return work / "out"


def sdist_names(dist: Path) -> set[str]:
    [sdist] = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        return {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}


def wheel_names(dist: Path) -> set[str]:
    [wheel] = dist.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


@pytest.mark.slow
def test_the_sdist_carries_the_deploy_files_license_and_changelog(dist: Path) -> None:
    names = sdist_names(dist)

    deploy = {str(p.relative_to(ROOT)) for p in (ROOT / "deploy").rglob("*") if p.is_file()}
    assert deploy
    assert deploy <= names
    assert {"LICENSE", "CHANGELOG.md", "README.md", "etl/py.typed"} <= names


@pytest.mark.slow
def test_the_wheel_holds_the_package_typed_and_licensed_but_no_deploy_files(dist: Path) -> None:
    names = wheel_names(dist)
    top = {name.split("/")[0] for name in names}

    assert top == {"etl", f"do_image_actions-{version('do-image-actions')}.dist-info"}
    assert "etl/py.typed" in names
    assert "etl/migrations/script.py.mako" in names
    assert f"do_image_actions-{version('do-image-actions')}.dist-info/licenses/LICENSE" in names
    assert not [name for name in names if "deploy" in name]


@pytest.mark.slow
def test_the_wheel_metadata_declares_the_license_urls_and_typing(dist: Path) -> None:
    [wheel] = dist.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        [name] = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = archive.read(name).decode()
        license_text = archive.read(name.replace("METADATA", "licenses/LICENSE")).decode()
    headers = [line for line in metadata.splitlines() if ": " in line]

    assert "License-Expression: MIT" in headers
    assert license_text.startswith("MIT License\n")
    assert "Classifier: Typing :: Typed" in headers
    assert any(line.startswith("Project-URL: Repository, https://") for line in headers)


@pytest.fixture(scope="module")
def installed(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel unpacked where mypy treats it as an installed package (py.typed needed)."""
    site = tmp_path_factory.mktemp("site")
    [wheel] = dist.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)  # noqa: S202  (the wheel we just built)
    return site


def run_mypy(installed: Path, folder: Path, script: str) -> subprocess.CompletedProcess[str]:
    (folder / "user.py").write_text(textwrap.dedent(script))
    # Run where a user's project is: not the checkout, so etl comes only from the wheel.
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--config-file=", "--cache-dir=.mypy_cache",
         "user.py"],
        cwd=folder, env={**os.environ, "PYTHONPATH": str(installed)},
        capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip


@pytest.mark.slow
def test_mypy_strict_accepts_a_user_script_against_the_installed_wheel(
    installed: Path, tmp_path: Path
) -> None:
    checked = run_mypy(installed, tmp_path, USER_SCRIPT)

    assert checked.stdout == "Success: no issues found in 1 source file\n", checked.stdout


@pytest.mark.slow
def test_mypy_strict_catches_misuse_of_the_api(installed: Path, tmp_path: Path) -> None:
    checked = run_mypy(installed, tmp_path, MISUSE_SCRIPT)

    errors = [
        line.split(": error: ")[0] for line in checked.stdout.splitlines() if ": error: " in line
    ]
    assert errors == ["user.py:3", "user.py:4", "user.py:5"], checked.stdout
