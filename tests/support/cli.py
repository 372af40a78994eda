"""Run the command line as a user does: a real process with the fake API's token."""

from __future__ import annotations

import os
import subprocess
import sys

from etl.fake import FakeApi
from tests.support.doubles import TOKEN


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "DIGITALOCEAN_ACCESS_TOKEN": TOKEN, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "etl", *args],
        capture_output=True,
        text=True,
        env=environ,
        timeout=timeout,
        check=False,
    )


def sync_args(api: FakeApi, database_url: str, *extra: str) -> list[str]:
    images = [arg for image in api.world.actions for arg in ("--image", str(image))]
    return [
        "sync",
        "--api-url",
        api.url,
        "--database-url",
        database_url,
        "--per-page",
        "20",
        "--strategy",  # the per-image listing is what these tests count; feed tests say so
        "per-image",
        *images,
        *extra,
    ]
