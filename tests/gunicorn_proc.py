"""The app under `gunicorn -c gunicorn.conf.py app:app`, as production runs it, for a test."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping

import requests

from tests.fakes.waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Gunicorn:
    port: int
    log_path: Path
    pid: int = 0  # the master

    def worker_pids(self) -> list[int]:
        return [int(p) for p in Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def media_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/twilio-media"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def running_gunicorn(tmp_path: Path, env: Mapping[str, str], workers: int = 1,
                     name: str = "gunicorn") -> Iterator[Gunicorn]:
    """Start gunicorn with `env` on a free port; wait until every worker booted and it answers.
    `name` names its log file, for tests that run several."""
    server = Gunicorn(port=free_port(), log_path=tmp_path / f"{name}.log")
    # As the settings fixture: loopback only, unsigned Twilio requests let in, no Realtime connections
    # opened ahead of calls, unless `env` says otherwise.
    full_env = {**os.environ, "HOST": "127.0.0.1", "TWILIO_SIGNATURE_CHECK": "off", "REALTIME_POOL_SIZE": "0", **env,
                "PORT": str(server.port),
                "WEB_CONCURRENCY": str(workers)}
    with open(server.log_path, "wb") as log:
        # No control socket: its default path is one per user, shared with any other gunicorn running.
        proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "--no-control-socket",
                                 "app:app"],
                                cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT)
        server.pid = proc.pid

        def up() -> bool:
            if proc.poll() is not None:
                return True
            if server.log().count("Booting worker") < workers:
                return False
            try:
                return requests.get(f"{server.base_url}/healthz", timeout=0.5).status_code == 200
            except requests.RequestException:
                return False

        try:
            wait_for(up, timeout=30, message=f"gunicorn with {workers} worker(s) to answer /healthz")
            assert proc.poll() is None, server.log()
            yield server
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
