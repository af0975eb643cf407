"""Webhook writes the database could not take in time, kept in memory and retried until they land.

Twilio does not retry a callback we answered with an error (its default retry policy covers a
connection that failed, not an answer), so a call's status, recording or transfer outcome answered
with a 500 during database trouble would be lost for good. The webhooks answer at once instead
and hand the write here. One greenlet per process applies the writes in the order handed over,
each in its own transaction, retrying the first while the database is in trouble (with backoff).
A callback for a call with writes still waiting here waits behind them (`waiting_for`): a recording's
status must not find the call unknown because the status that creates its row has not landed yet.

A write that fails by itself is dropped with a log line. At most `max_pending` wait; past that a
write is dropped and counted. They live in this process's memory: a process that dies loses its own.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from typing import Callable

import gevent
from sqlalchemy.orm import Session

from services import metrics
from services.call_journal import is_database_trouble
from services.post_call.jobs import backoff_s
from services.store.db import Database

Write = Callable[[Session], None]
MAX_PENDING = 10_000
RETRY_FIRST_S = 0.2
RETRY_MAX_S = 5.0
log = logging.getLogger("store")


class RetriedWrites:
    def __init__(self, db: Database, *, max_pending: int = MAX_PENDING):
        self._db = db
        self._max_pending = max_pending
        # Guards: _pending, _per_call, _greenlet. Request greenlets append (and start the writer);
        # the writer greenlet pops.
        self._lock = threading.Lock()
        self._pending: deque[tuple[str, str, Write]] = deque()  # (what, call sid, write)
        self._per_call: Counter[str] = Counter()  # writes waiting, by call sid
        self._greenlet: gevent.Greenlet | None = None

    def submit(self, what: str, call_sid: str, write: Write) -> bool:
        """Keep `write` for a retry; False when too many are waiting (it is dropped)."""
        with self._lock:
            accepted = len(self._pending) < self._max_pending
            if accepted:
                self._pending.append((what, call_sid, write))
                self._per_call[call_sid] += 1
                if self._greenlet is None or self._greenlet.dead:
                    self._greenlet = gevent.spawn(self._run)
        metrics.WEBHOOK_WRITES.labels("kept" if accepted else "dropped").inc()
        if not accepted:
            log.error("webhook write dropped: too many waiting for the database",
                      extra={"call_sid": call_sid, "what": what, "max_pending": self._max_pending})
        return accepted

    def waiting_for(self, call_sid: str) -> bool:
        """Whether writes for the call wait here (a new one for it must wait behind them)."""
        with self._lock:
            return call_sid in self._per_call

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    self._greenlet = None
                    return
                what, call_sid, write = self._pending[0]
            self._store(what, call_sid, write)
            with self._lock:
                self._pending.popleft()
                self._per_call[call_sid] -= 1
                if not self._per_call[call_sid]:
                    del self._per_call[call_sid]

    def _store(self, what: str, call_sid: str, write: Write) -> None:
        attempt, started = 0, time.monotonic()
        while True:
            try:
                with self._db.session() as session:
                    write(session)
            except Exception as exc:
                if not is_database_trouble(exc):
                    metrics.WEBHOOK_WRITES.labels("dropped").inc()
                    log.error("webhook write failed; dropped", exc_info=exc,
                              extra={"call_sid": call_sid, "what": what})
                    return
                attempt += 1
                gevent.sleep(backoff_s(attempt, RETRY_FIRST_S, RETRY_MAX_S))
                continue
            metrics.WEBHOOK_WRITES.labels("stored").inc()
            log.info("webhook write stored after database trouble", extra={
                "call_sid": call_sid, "what": what, "retries": attempt,
                "waited_s": round(time.monotonic() - started, 1)})
            return
