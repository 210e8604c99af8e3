"""A real Prefect server for tests: `prefect server start` in a subprocess, one per test module.

Registered as a pytest plugin by conftest.py, so any module can ask for ``server`` and
``client``. The server gets its own PREFECT_HOME (a temp dir), and the test process is pointed
at it before its first ``import prefect``, so nothing is written to ~/.prefect.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BIN, subprocess_env


@dataclass(frozen=True)
class Server:
    url: str
    home: Path
    env: dict[str, str]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], bool], seconds: float, what: str, log: Path) -> None:
    """Poll ``check`` until it holds; fail the test with the tail of ``log`` if it never does."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    pytest.fail(f"{what} not ready after {seconds} s; log tail:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen[Any]) -> None:
    """Stop a process started in its own session, and everything it started."""
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=wait)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A real Prefect server on a free port, with its own PREFECT_HOME, for this module."""
    home = tmp_path_factory.mktemp("prefect_home")
    url = f"http://127.0.0.1:{free_port()}/api"
    env = subprocess_env(
        PREFECT_HOME=str(home),
        PREFECT_API_URL=url,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_UI_ENABLED="false",
        DO_NOT_TRACK="1",
    )
    log = home / "server.log"
    host, port = url.split("//")[1].split("/")[0].split(":")
    cmd = [str(BIN / "prefect"), "server", "start", "--host", host, "--port", port, "--no-ui"]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: _healthy(url), 120, "prefect server", log)
        with pytest.MonkeyPatch.context() as patch:
            # Set before the first `import prefect` of this session: it reads PREFECT_HOME then.
            patch.setenv("PREFECT_HOME", str(home))
            patch.setenv("PREFECT_API_URL", url)
            yield Server(url, home, env)
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[Any]:
    """A synchronous Prefect client for the test server."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    with (
        temporary_settings(updates={PREFECT_API_URL: server.url, PREFECT_HOME: server.home}),
        get_client(sync_client=True) as sync_client,
    ):
        yield sync_client
