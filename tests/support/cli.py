"""Run the command line as a user does: a real process with the fake API's token."""

from __future__ import annotations

import os
import subprocess
import sys
import time

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


def overlapping_syncs(
    api: FakeApi, database_url: str
) -> tuple[subprocess.Popen[str], str, subprocess.CompletedProcess[str]]:
    """Start a sync, start a second once the first has asked the API for something.

    Returns the first process (finished), its stderr, and the second's result. With 100 ms
    a request, one worker and 5 actions a page, the first lasts ~3 s: past the second's start.
    """
    api.latency = 0.1
    args = [sys.executable, "-m", "etl", *sync_args(api, database_url, "--per-page", "5")]
    env = {**os.environ, "DIGITALOCEAN_ACCESS_TOKEN": TOKEN, "DO_IMAGE_ACTIONS_WORKERS": "1"}
    first = subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 30
    while not api.served and time.monotonic() < deadline:
        time.sleep(0.01)
    second = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60, check=False)
    _, first_err = first.communicate(timeout=60)
    return first, first_err, second
