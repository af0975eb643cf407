"""The database held by another process's lock, for tests of database trouble during a call.

SQLite: `BEGIN EXCLUSIVE` on a connection of its own (in WAL mode readers still read, writers wait).
PostgreSQL: `LOCK TABLE calls, turns IN ACCESS EXCLUSIVE MODE` (nothing reads or writes them).
The lock lives in a child process, so a server that blocks its event loop on the lock cannot
also stop the lock from being released (and a test can tell the two apart).
"""
from __future__ import annotations

import subprocess
import sys
import time
from contextlib import contextmanager
from typing import Iterator

from sqlalchemy.engine import make_url

from services.store.db import normalize_url

_SQLITE = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()
conn.execute("COMMIT")
"""

_POSTGRES = """
import sys
from sqlalchemy import create_engine, pool
engine = create_engine(sys.argv[1], poolclass=pool.NullPool)
with engine.connect() as conn:
    conn.exec_driver_sql("LOCK TABLE calls, turns IN ACCESS EXCLUSIVE MODE")
    print("locked", flush=True)
    sys.stdin.read()
    conn.rollback()
"""


class HeldLock:
    def __init__(self, proc: subprocess.Popen):
        self._proc = proc
        self.taken_at = time.monotonic()
        self.released_at: float | None = None

    @property
    def held(self) -> bool:
        return self.released_at is None

    def release(self, timeout: float = 10.0) -> None:
        if self.released_at is not None:
            return
        self._proc.stdin.close()
        self._proc.wait(timeout=timeout)
        self.released_at = time.monotonic()
        assert self._proc.returncode == 0, self._proc.stderr.read()


@contextmanager
def database_locked(url: str, timeout: float = 30.0) -> Iterator[HeldLock]:
    """Hold the lock until the block ends or `release()` is called."""
    parsed = make_url(normalize_url(url))
    if parsed.get_backend_name() == "sqlite":
        script, target = _SQLITE, parsed.database
    else:
        script, target = _POSTGRES, parsed.render_as_string(hide_password=False)
    proc = subprocess.Popen([sys.executable, "-c", script, target], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = None
    try:
        line = proc.stdout.readline()  # gevent's subprocess: the wait yields
        assert line.strip() == "locked", proc.stderr.read()
        lock = HeldLock(proc)
        yield lock
    finally:
        if lock is not None:
            lock.release(timeout)
        elif proc.poll() is None:
            proc.kill()
            proc.wait()
