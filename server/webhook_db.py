"""The database as Twilio's webhooks use it: within a bound, because Twilio waits 15 s for an
answer and then plays its own error message to the caller.

A webhook's session waits for a lock or a statement at most `WEBHOOK_DB_WAIT_S` (background work
waits longer, services/store/db.py), and all of a webhook's database work ends within that and
`CONNECT_SLACK_S`, or raises `DatabaseUnavailable`. A callback's write that cannot be stored in time
is kept for a retry (services/retried_writes.py): Twilio does not send a callback again.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import gevent
from flask import current_app
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from server.request_db import get_db
from services.call_journal import is_database_trouble

log = logging.getLogger("webhooks")


class DatabaseUnavailable(Exception):
    """The database did not serve a webhook in time (unreachable, locked or slow); says why."""


# Beyond the lock and statement waits, for what they do not bound: a connection to make, or one
# to wait for in the pool.
CONNECT_SLACK_S = 1.0


@contextmanager
def within_bound() -> Iterator[None]:
    """The database work inside ends within `WEBHOOK_DB_WAIT_S` (and the slack), or raises
    `DatabaseUnavailable`: Twilio waits 15 s for a webhook, then tells the caller of an error."""
    bound_s = current_app.config["SETTINGS"].webhook_db_wait_s + CONNECT_SLACK_S
    deadline = gevent.Timeout(bound_s)
    deadline.start()
    try:
        yield
    except gevent.Timeout as exc:
        if exc is not deadline:
            raise
        raise DatabaseUnavailable(f"no answer within {bound_s:g} s") from None
    except SQLAlchemyError as exc:
        if not is_database_trouble(exc):
            raise
        raise DatabaseUnavailable(str(exc).splitlines()[0][:200]) from None
    finally:
        deadline.cancel()


def bounded_session():
    """A session whose lock and statement waits are the webhook's (shorter than background work's)."""
    return get_db().session(wait_s=current_app.config["SETTINGS"].webhook_db_wait_s)


@contextmanager
def database() -> Iterator[Session]:
    with within_bound(), bounded_session() as bounded:
        yield bounded


def store_or_keep(what: str, call_sid: str, write: Callable[[Session], Any],
                  later: Callable[[Session], Any] | None = None) -> tuple[bool, Any]:
    """Apply a callback's write now, or, when the database cannot take it in time, keep it
    (`later`, if given, else the same write) for a retry: Twilio does not send a callback again.
    Kept as well, behind them, when earlier writes for the call are kept.
    (stored now, what the write returned)."""
    retried = current_app.extensions["retried_writes"]
    if retried.waiting_for(call_sid):
        why = "earlier writes for the call wait for the database"
    else:
        try:
            with database() as bounded:
                return True, write(bounded)
        except DatabaseUnavailable as exc:
            why = str(exc)
    kept = retried.submit(what, call_sid, later or write)
    log.warning("database unavailable: the callback's write is kept for a retry" if kept else
                "database unavailable: the callback's write is lost",
                extra={"call_sid": call_sid or "-", "what": what, "why": why})
    return False, None
