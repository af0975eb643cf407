"""Engine, sessions and schema upgrades.

One `Database` per app (the web edge keeps it in `app.extensions["db"]`); call greenlets
and jobs open their own sessions with `db.session()`.

The pool is per process (each gunicorn worker has its own) and every greenlet that queries
holds a connection while it waits, so the pool covers the queries a worker runs at once
rather than its threads (it has one): `POOL_SIZE` kept open, `MAX_OVERFLOW` more in a burst;
a greenlet finding none waits for one, yielding, up to `POOL_TIMEOUT_S`. Connections are
pinged at checkout (a database restart costs no failed statement) and replaced after
`POOL_RECYCLE_S` (idle cut-offs of proxies and firewalls).

SQLite waits for a lock inside C, where the worker's event loop, and every call on it, would
wait too. Its own wait is cut to `SQLITE_BUSY_TIMEOUT_S`; longer waits happen here instead,
retrying the statement with gevent sleeps, for up to `lock_wait_s`.

A session opened with `wait_s` (a webhook's, which must answer Twilio in time) waits less: on
SQLite its greenlet's lock waits are cut to it, on PostgreSQL its transaction's lock and
statement timeouts are set to it. Either way the wait ends in an `OperationalError`.
"""
from __future__ import annotations

import logging
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import gevent
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
log = logging.getLogger("store")

POOL_SIZE = 5
MAX_OVERFLOW = 10
POOL_TIMEOUT_S = 10.0
POOL_RECYCLE_S = 1800
# What SQLite may wait for a lock in C, blocking the loop; and how long a statement waits for
# one in all, yielding (the busy timeout this engine had before).
SQLITE_BUSY_TIMEOUT_S = 0.002
LOCK_WAIT_S = 15.0
_LOCK_RETRY_MAX_S = 0.05
# A shorter lock wait for the current greenlet's statements (threading.local is per greenlet
# under gevent's patches): set by `Database.session(wait_s=...)` for the session's life.
_bounded = threading.local()
# PostgreSQL: a server that vanished without closing the socket is noticed in about a minute.
_PG_CONNECT_ARGS = {"connect_timeout": 10, "keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10,
                    "keepalives_count": 3}


class Database:
    def __init__(self, url: str, *, lock_wait_s: float = LOCK_WAIT_S):
        self.url = normalize_url(url)
        self.lock_wait_s = lock_wait_s
        self.engine: Engine = _make_engine(self.url, lock_wait_s)
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self, *, write_lock: bool = False, wait_s: float | None = None) -> Iterator[Session]:
        """A session that commits on success and rolls back on error.

        `write_lock`: on SQLite, take the database's write lock first (`BEGIN IMMEDIATE`), so that
        no other connection writes between this transaction's reads and its writes (PostgreSQL:
        lock the rows read, `with_for_update`).
        `wait_s`: wait at most this long for a lock or a statement (the first transaction's, on
        PostgreSQL: the session is meant to commit once).
        """
        session = self.sessionmaker()
        outer_wait = getattr(_bounded, "wait_s", None)
        try:
            if wait_s is not None:
                _bounded.wait_s = wait_s if outer_wait is None else min(wait_s, outer_wait)
                if self.engine.dialect.name == "postgresql":
                    ms = max(1, int(wait_s * 1000))
                    connection = session.connection()
                    connection.exec_driver_sql(f"SET LOCAL lock_timeout = {ms}")
                    connection.exec_driver_sql(f"SET LOCAL statement_timeout = {ms}")
            if write_lock and self.engine.dialect.name == "sqlite":
                session.connection().exec_driver_sql("BEGIN IMMEDIATE")
            yield session
            session.commit()
        except BaseException:
            try:
                session.rollback()
            except Exception:
                # E.g. the connection died with the commit: the error that got us here is the one to raise.
                log.debug("rollback failed", exc_info=True)
            raise
        finally:
            session.close()
            _bounded.wait_s = outer_wait

    def upgrade(self) -> None:
        """Bring the schema to the newest migration."""
        from alembic import command

        command.upgrade(alembic_config(self.url), "head")

    def dispose(self) -> None:
        self.engine.dispose()


def normalize_url(url: str) -> str:
    """PostgreSQL goes through psycopg 3, whatever driver the URL names or omits.

    psycopg 3 waits on its socket through gevent's patched `select` when it finds gevent's
    patches (psycopg.waiting), so a query yields to the calls' greenlets; psycopg2 would block
    the whole worker's loop for as long as each query takes.
    """
    parsed = make_url(url)
    if parsed.drivername in ("postgres", "postgresql", "postgresql+psycopg2"):
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    return url


def _make_engine(url: str, lock_wait_s: float) -> Engine:
    parsed = make_url(url)
    pool = {"pool_pre_ping": True, "pool_recycle": POOL_RECYCLE_S, "pool_timeout": POOL_TIMEOUT_S}
    if parsed.get_backend_name() != "sqlite":
        if parsed.get_backend_name() == "postgresql":
            # The URL's own values win.
            connect_args = {k: v for k, v in _PG_CONNECT_ARGS.items() if k not in parsed.query}
            pool.update(connect_args=connect_args)
        return create_engine(url, pool_size=POOL_SIZE, max_overflow=MAX_OVERFLOW, **pool)
    database = parsed.database
    in_memory = not database or database == ":memory:"
    if not in_memory:
        Path(database).parent.mkdir(parents=True, exist_ok=True)
        pool.update(pool_size=POOL_SIZE, max_overflow=MAX_OVERFLOW)
    else:
        pool.pop("pool_timeout")  # one shared connection: no queue to wait in
    factory = type("PatientConnection", (PatientConnection,), {"lock_wait_s": lock_wait_s})
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False,
                                              "factory": factory}, **pool)

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection, _record):
        # WAL lets several gunicorn workers read while one writes.
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return engine


def _retryable(exc: sqlite3.OperationalError) -> bool:
    # Busy: another connection holds the lock. Not BUSY_SNAPSHOT: this transaction read a version
    # that another one has since changed, and only a rollback helps it.
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF == sqlite3.SQLITE_BUSY and code != sqlite3.SQLITE_BUSY_SNAPSHOT


def _patiently(lock_wait_s: float, call, *args):
    """Run a sqlite3 call; while another connection holds the lock, retry it after gevent sleeps.

    A statement that came back busy did nothing, and its transaction is as it was: running it
    again is what SQLite's own busy handler does, without blocking the loop meanwhile.
    """
    deadline = None
    pause = 0.001
    while True:
        try:
            return call(*args)
        except sqlite3.OperationalError as exc:
            if not _retryable(exc):
                raise
            now = time.monotonic()
            if deadline is None:
                deadline = now + lock_wait_s
            if now >= deadline:
                raise
            gevent.sleep(min(pause, deadline - now))
            pause = min(pause * 2, _LOCK_RETRY_MAX_S)


def _lock_wait(connection_wait_s: float) -> float:
    bound = getattr(_bounded, "wait_s", None)
    return connection_wait_s if bound is None else min(bound, connection_wait_s)


class PatientCursor(sqlite3.Cursor):
    def execute(self, sql, parameters=()):
        return _patiently(_lock_wait(self.connection.lock_wait_s), super().execute, sql, parameters)

    def executemany(self, sql, seq_of_parameters):
        rows = seq_of_parameters if isinstance(seq_of_parameters, list) else list(seq_of_parameters)
        return _patiently(_lock_wait(self.connection.lock_wait_s), super().executemany, sql, rows)


class PatientConnection(sqlite3.Connection):
    """A sqlite3 connection whose lock waits yield to the other greenlets (`lock_wait_s` is set
    on a subclass per engine)."""

    lock_wait_s = LOCK_WAIT_S

    def cursor(self, factory=PatientCursor):
        return super().cursor(factory)

    def commit(self):
        return _patiently(_lock_wait(self.lock_wait_s), super().commit)


def alembic_config(url: str):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg
