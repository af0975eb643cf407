"""The database held by another process's lock, for tests of database trouble during a call.

SQLite: `BEGIN EXCLUSIVE` on a connection of its own (in WAL mode readers still read, writers wait).
PostgreSQL: `LOCK TABLE calls, turns IN ACCESS EXCLUSIVE MODE` (nothing reads or writes them).
The lock lives in a child process, so a server that blocks its event loop on the lock cannot
also stop the lock from being released (and a test can tell the two apart). `database_lock_ready`
starts that process and connects it first, for a test that must take the lock at one moment of a
call: a new process takes a second or more to import and connect on a busy machine.
"""
from __future__ import annotations

import subprocess
import sys
import time
from contextlib import contextmanager
from typing import Iterator

from sqlalchemy.engine import make_url

from services.store.db import normalize_url

# Each script connects, says "ready", locks once it reads a line, says "locked", and lets go at
# the end of its input.
_SQLITE = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)
print("ready", flush=True)
sys.stdin.readline()
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
    print("ready", flush=True)
    sys.stdin.readline()
    conn.exec_driver_sql("LOCK TABLE calls, turns IN ACCESS EXCLUSIVE MODE")
    print("locked", flush=True)
    sys.stdin.read()
    conn.rollback()
"""


class HeldLock:
    def __init__(self, proc: subprocess.Popen):
        self._proc = proc
        self.taken_at: float | None = None
        self.released_at: float | None = None

    def take(self) -> None:
        """Lock now; returns once the lock is held."""
        assert self.taken_at is None, "taken already"
        self._proc.stdin.write("lock\n")
        self._proc.stdin.flush()
        line = self._proc.stdout.readline()  # gevent's subprocess: the wait yields
        assert line.strip() == "locked", self._proc.stderr.read()
        self.taken_at = time.monotonic()

    @property
    def held(self) -> bool:
        return self.taken_at is not None and self.released_at is None

    def release(self, timeout: float = 10.0) -> None:
        if self.released_at is not None:
            return
        self._proc.stdin.close()
        self._proc.wait(timeout=timeout)
        self.released_at = time.monotonic()
        assert self._proc.returncode == 0, self._proc.stderr.read()


@contextmanager
def database_lock_ready(url: str, timeout: float = 30.0) -> Iterator[HeldLock]:
    """A lock's process, connected and waiting for `take()`; whatever it holds goes as the block ends."""
    parsed = make_url(normalize_url(url))
    if parsed.get_backend_name() == "sqlite":
        script, target = _SQLITE, parsed.database
    else:
        script, target = _POSTGRES, parsed.render_as_string(hide_password=False)
    proc = subprocess.Popen([sys.executable, "-c", script, target], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = None
    try:
        line = proc.stdout.readline()
        assert line.strip() == "ready", proc.stderr.read()
        lock = HeldLock(proc)
        yield lock
    finally:
        if lock is not None:
            lock.release(timeout)
        elif proc.poll() is None:
            proc.kill()
            proc.wait()


@contextmanager
def database_locked(url: str, timeout: float = 30.0) -> Iterator[HeldLock]:
    """Hold the lock until the block ends or `release()` is called."""
    with database_lock_ready(url, timeout) as lock:
        lock.take()
        yield lock
