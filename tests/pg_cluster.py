"""A throwaway PostgreSQL cluster on a port of its own, which a test may stop and start at will.

The machine's shared server (127.0.0.1:5432) must never be stopped; this one lives in a temp
folder, runs as the ``postgres`` OS user (the server refuses root; tests run as root in CI),
and is removed with its folder.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BIN = Path("/usr/lib/postgresql/15/bin")


def missing() -> str | None:
    """Why a cluster cannot be started here, or None."""
    if not (BIN / "initdb").exists():
        return f"no PostgreSQL 15 server binaries in {BIN}"
    if os.geteuid() != 0 or shutil.which("runuser") is None:
        return "starting a server as the postgres user needs root and runuser"
    try:
        import pwd

        pwd.getpwnam("postgres")
    except KeyError:
        return "no postgres OS user"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Cluster:
    """``initdb`` once; :meth:`start` and :meth:`stop` (``pg_ctl -m fast``) as often as a test likes."""

    def __init__(self, root: Path) -> None:
        self.data, self.port = root / "data", _free_port()
        self.data.mkdir()
        shutil.chown(self.data, "postgres", "postgres")
        self._pg(BIN / "initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "--no-sync")

    def _pg(self, *cmd: object) -> None:
        proc = subprocess.run(
            ["runuser", "-u", "postgres", "--", *map(str, cmd)], capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr

    def start(self) -> None:
        options = f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._pg(
            BIN / "pg_ctl", "-D", self.data, "-l", self.data / "server.log", "-w", "-o", options, "start"
        )

    def stop(self) -> None:
        self._pg(BIN / "pg_ctl", "-D", self.data, "-w", "-m", "fast", "stop")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import sqlalchemy

        admin = sqlalchemy.create_engine(
            self.url().replace("postgresql://", "postgresql+psycopg2://"), isolation_level="AUTOCOMMIT"
        )
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        return self.url(name)


@contextmanager
def cluster() -> Iterator[Cluster]:
    """A started cluster, stopped and deleted afterwards."""
    root = Path(tempfile.mkdtemp(prefix="hpopipe-pg-"))
    os.chmod(root, 0o755)  # the postgres user must reach its data folder inside
    try:
        pg = Cluster(root)
        pg.start()
        try:
            yield pg
        finally:
            subprocess.run(
                [
                    "runuser",
                    "-u",
                    "postgres",
                    "--",
                    str(BIN / "pg_ctl"),
                    "-D",
                    str(pg.data),
                    "-m",
                    "immediate",
                    "stop",
                ],
                capture_output=True,
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
