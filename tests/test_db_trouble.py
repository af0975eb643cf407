"""Database trouble: SQLite's lock waits yield to the loop (PostgreSQL's driver yields on its own)."""
import time

import gevent
import pytest
from sqlalchemy.exc import OperationalError

from services.store.db import Database
from services.store.models import Business
from tests import databases
from tests.db_lock import database_locked
from tests.fakes.waiting import wait_for


sqlite_only = pytest.mark.skipif(databases.is_postgres(), reason="SQLite waits for its lock in C; PostgreSQL's "
                                                                 "driver waits on its socket, yielding")


def _add_business(db: Database, name: str) -> None:
    with db.session() as session:
        session.add(Business(name=name))


@sqlite_only
def test_a_statement_waiting_for_sqlites_lock_lets_every_other_greenlet_run(settings):
    db = Database(settings.database_url)
    db.upgrade()
    ticks = []

    def tick():
        while True:
            ticks.append(time.monotonic())
            gevent.sleep(0.005)

    ticker = gevent.spawn(tick)
    try:
        with database_locked(settings.database_url):
            writer = gevent.spawn(_add_business, db, "waits for the lock")
            before = len(ticks)
            wait_for(lambda: len(ticks) >= before + 20, 5, message="the loop to run while the insert waits")
            assert not writer.ready()
        writer.get(timeout=5)
    finally:
        ticker.kill()
    with db.session() as session:
        assert session.query(Business).filter_by(name="waits for the lock").count() == 1
    db.dispose()


@sqlite_only
def test_a_statement_gives_up_on_sqlites_lock_after_the_lock_wait(settings):
    db = Database(settings.database_url, lock_wait_s=0.2)
    db.upgrade()
    with database_locked(settings.database_url):
        started = time.monotonic()
        with pytest.raises(OperationalError, match="database is locked"):
            _add_business(db, "never")
        assert time.monotonic() - started >= 0.2
    _add_business(db, "once the lock is gone")
    db.dispose()
