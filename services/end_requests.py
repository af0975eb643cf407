"""The console's End call, carried out by the process that holds the call, whichever took the click.

The click stores `calls.end_requested_at` (`request_end`). Each process, while it carries calls,
asks the database every `interval_s` which of them are so marked, in one query for them all, and
has each say goodbye and hang up (`CallSession.end_from_console`): the goodbye is heard, then the
line closes and the call is stored with end reason `ended_from_console`, as any graceful ending.
A request for a call whose process is gone is left to the sweeper, which ends such rows anyway.
"""
from __future__ import annotations

import logging
import threading

import gevent
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from services.call_journal import PollerTrouble
from services.live_calls import LiveCalls
from services.logging_setup import call_logger
from services.store.db import Database
from services.store.models import Call, utcnow

INTERVAL_S = 1.0

log = logging.getLogger("calls")


def request_end(session: Session, call_id: int) -> bool:
    """Mark a live call to be ended (in the caller's transaction). False: it has ended, or is
    marked already (a second click asks for nothing more)."""
    marked = session.execute(
        update(Call).where(Call.id == call_id, Call.ended_at.is_(None), Call.end_requested_at.is_(None))
        .values(end_requested_at=utcnow()).execution_options(synchronize_session=False))
    return marked.rowcount == 1


class EndRequestWatch:
    """One per process: a greenlet that runs while the process carries calls (started by the first
    call to arrive, `LiveCalls.on_first_call`; it stops when none is left). Lock order: `_lock`
    → LiveCalls._lock (the stop looks at the calls under it); nothing else is taken under it."""

    def __init__(self, db: Database, live_calls: LiveCalls, interval_s: float = INTERVAL_S):
        self._db = db
        self._live_calls = live_calls
        self._interval_s = interval_s
        # Guards: _greenlet. Written by whichever media handler adds a first call, and by the
        # watch greenlet as it stops.
        self._lock = threading.Lock()
        self._greenlet: gevent.Greenlet | None = None
        self._told: set[str] = set()  # the watch greenlet's own: calls already told to end
        self._trouble = PollerTrouble(log, "end requests")
        live_calls.on_first_call = self.ensure_running

    def ensure_running(self) -> None:
        with self._lock:
            if self._greenlet is None or self._greenlet.dead:
                self._greenlet = gevent.spawn(self._run)

    def _run(self) -> None:
        while True:
            gevent.sleep(self._interval_s)
            sids = self._live_calls.call_sids()
            if not sids:
                with self._lock:
                    # A call added meanwhile found this greenlet alive and started none: look again.
                    if not self._live_calls.call_sids():
                        self._greenlet = None
                        self._told.clear()
                        return
                continue
            self._look(sids)

    def _look(self, sids: list[str]) -> None:
        try:
            with self._db.session() as session:
                marked = set(session.scalars(select(Call.call_sid).where(
                    Call.call_sid.in_(sids), Call.end_requested_at.is_not(None), Call.ended_at.is_(None))))
        except Exception as exc:
            self._trouble.failed(exc)
            return
        self._trouble.looked()
        self._told &= set(sids)
        new = marked - self._told
        if new:
            self._told |= new
            for sid in new:
                call_logger("calls", sid).info("End call from the console: the call says goodbye")
            self._live_calls.end_from_console(new)
