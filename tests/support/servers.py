"""Private database servers that a test may stop and restart, never the shared services."""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"))), Path("/nonexistent"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(check: list[str], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while subprocess.run(check, capture_output=True, check=False).returncode != 0:
        if time.monotonic() > deadline:
            pytest.fail(f"private server did not come up: {' '.join(check)}")
        time.sleep(0.1)


class PrivatePostgres:
    """A PostgreSQL cluster in a temporary folder, run as the postgres user (it refuses root)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.chown(folder, "postgres")
        self._as_postgres(
            str(PG_BIN / "initdb"), "-D", str(folder / "data"), "-A", "trust", "-U", "postgres",
            "--no-sync", "-E", "UTF8",
        )  # fmt: skip

    def _as_postgres(self, *command: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *command], check=True, capture_output=True
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_postgres(
            str(PG_BIN / "pg_ctl"), "-D", str(self.folder / "data"), "-o", options,
            "-l", str(self.folder / "log"), "-w", "start",
        )  # fmt: skip

    def kill(self) -> None:
        """Stop at once, as a crash or a failover would."""
        self._as_postgres(
            str(PG_BIN / "pg_ctl"), "-D", str(self.folder / "data"), "-m", "immediate", "stop"
        )


class PrivateMariaDB:
    """A MariaDB server with its own datadir and port."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"mysql+pymysql://root@127.0.0.1:{self.port}/etl"
        self.process: subprocess.Popen[bytes] | None = None
        subprocess.run(
            ["mariadb-install-db", "--no-defaults", f"--datadir={folder / 'data'}", "--user=root",
             "--auth-root-authentication-method=normal", "--skip-test-db"],
            check=True, capture_output=True,
        )  # fmt: skip

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["mariadbd", "--no-defaults", f"--datadir={self.folder / 'data'}",
             f"--port={self.port}", "--bind-address=127.0.0.1", f"--socket={self.folder / 'sock'}",
             "--user=root", "--skip-log-bin", "--innodb-buffer-pool-size=32M"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        ping = ["mariadb-admin", "-h127.0.0.1", f"-P{self.port}", "-uroot", "ping"]
        _wait(ping)
        subprocess.run(
            ["mariadb", "-h127.0.0.1", f"-P{self.port}", "-uroot", "-e",
             "CREATE DATABASE IF NOT EXISTS etl"],
            check=True,
        )  # fmt: skip

    def kill(self) -> None:
        """SIGKILL the server, as a crash would."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)
            self.process = None


@contextlib.contextmanager
def private_server(kind: str) -> Iterator[PrivatePostgres | PrivateMariaDB]:
    """Yield a started private server of ``kind``; kill it and remove it afterwards."""
    # Not under pytest's tmp_path: its root-only folders keep the postgres user out.
    folder = Path(tempfile.mkdtemp(prefix=f"dia-{kind}-"))
    server: PrivatePostgres | PrivateMariaDB = (
        PrivatePostgres(folder) if kind == "postgresql" else PrivateMariaDB(folder)
    )
    server.start()
    try:
        yield server
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            server.kill()
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def tmpfs(folder: Path, size: str) -> Iterator[Path]:
    """Mount a small tmpfs on ``folder`` (the tests run as root); unmount afterwards."""
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def remount(folder: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(folder)], check=True)
