"""Concurrent call limits, per business and for the whole deployment, decided in the database.

Several gunicorn workers and hosts share one database, so counting the live calls and writing
the new call's row are one transaction under a lock: on PostgreSQL a transaction-level advisory
lock (the deployment-wide count) and the business row `FOR UPDATE`; on SQLite `BEGIN IMMEDIATE`
(one writer at a time). Decided at the webhook, before the stream TwiML is returned.

A call holds a slot while its row is not over (no terminal status, no end time) and is younger
than the longest a call can last plus a margin, so that a worker that crashed mid-call never holds
a slot for good. An admitted call whose stream has not started by its `stream_due_by` (the stream
token's expiry) plus a margin for the journal to write its `stream_sid` never will: it stops
counting, and the next admission or status callback stores it as over (end reason `no_stream`).
Twilio's own final status, when it comes, still has the last word on such a row.

Admission waits for its lock and statements at most `wait_s` (`WEBHOOK_DB_WAIT_S`): the webhook
must answer Twilio in time, with an apology when the database cannot decide (server/routes/webhooks.py).
"""
from __future__ import annotations

import dataclasses
import logging
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Iterator

from sqlalchemy import bindparam, case, func, insert, or_, select, text, update
from sqlalchemy.orm import Session

from services import metrics
from services.store.call_records import TERMINAL_STATUSES, AnsweringBusiness
from services.store.db import Database
from services.store.end_reasons import EndReason
from services.store.models import Business, Call, utcnow
from services.settings import Settings

# The advisory lock's key: any constant all processes agree on ("calls" in ASCII).
_ADVISORY_KEY = 0x63616C6C73
log = logging.getLogger("limits")

# A call holds a slot while this is true of its row (and it started after the stale cut-off).
_LIVE = (Call.ended_at.is_(None), Call.status.not_in(TERMINAL_STATUSES))
# Admitted, and its stream neither started nor able to start any more (`lost_before`: now less the
# margin). With `_LIVE`, these are the terms of the index `ix_calls_awaiting_stream`: a lookup of
# lost streams reads only the rows still waiting for one.
_STREAM_LOST = (Call.stream_sid.is_(None), Call.stream_due_by < bindparam("lost_before"))
# The deployment's live calls and the business's, but for the call being admitted (a retried
# webhook must not count itself): one statement, built once, as the webhook runs on the loop.
_LIVE_COUNTS = select(
    func.count(),
    func.coalesce(func.sum(case((Call.business_id == bindparam("business_id"), 1), else_=0)), 0),
).select_from(Call).where(
    *_LIVE, Call.started_at >= bindparam("since"), Call.call_sid != bindparam("call_sid"),
    or_(Call.stream_sid.is_not(None), Call.stream_due_by.is_(None), Call.stream_due_by >= bindparam("lost_before")))
_EXISTING = select(Call.end_reason, Call.status).where(Call.call_sid == bindparam("call_sid"))
# The call's row written with its values as parameters of a statement built once (values built
# into a statement make SQLAlchemy key and compile it anew: twice the time).
_INSERT_CALL = insert(Call.__table__)
_UPDATE_CALL = update(Call.__table__).where(Call.call_sid == bindparam("admitted_sid"))
# Lost streams stored as over, in the admission's transaction. Core, not ORM: no session objects
# to synchronise, and the webhook's loop time stays one indexed UPDATE.
_CLOSE_LOST = (update(Call.__table__).where(*_LIVE, *_STREAM_LOST)
               .values(status="completed", end_reason=EndReason.NO_STREAM.value, ended_at=bindparam("closed_at"))
               .returning(Call.call_sid, Call.business_id))


@dataclass(frozen=True)
class Admission:
    admitted: bool
    limit: str | None = None  # "business" | "server" when refused
    live_business: int = 0
    live_server: int = 0
    # Admitted: the stream must start by then (the stream token expires no later).
    stream_due_by: datetime | None = None


class CallLimits:
    def __init__(self, db: Database, max_server_calls: int, stale_after_s: float, stream_start_timeout_s: float,
                 stream_start_margin_s: float, wait_s: float | None = None):
        self._db = db
        self._wait_s = wait_s
        self._max_server_calls = max_server_calls
        self._stale_after_s = stale_after_s
        self._stream_start_timeout_s = stream_start_timeout_s
        self._stream_start_margin_s = stream_start_margin_s

    @classmethod
    def from_settings(cls, db: Database, settings: Settings) -> "CallLimits":
        timing = settings.timing
        return cls(db, settings.max_concurrent_calls, stale_after_s=timing.max_call_s + timing.stale_call_margin_s,
                   stream_start_timeout_s=timing.stream_start_timeout_s,
                   stream_start_margin_s=timing.stream_start_margin_s, wait_s=settings.webhook_db_wait_s)

    def admit(self, *, call_sid: str, business: Business | AnsweringBusiness, direction: str, from_number: str,
              to_number: str, status: str, is_test: bool = False) -> Admission:
        """Count the live calls and write this call's row, atomically. A refused call's row is
        stored as over, with end reason `limit`. A retried webhook gets the first answer again.
        Calls whose stream never started are stored as over first (one indexed UPDATE).
        Raises SQLAlchemy's `OperationalError` when the database is locked or slow past `wait_s`."""
        with self._locked(business.id) as session:
            now = utcnow()
            lost = self._close_lost_streams(session, now)
            admission = self._admit(session, now, call_sid=call_sid, business=business, direction=direction,
                                    from_number=from_number, to_number=to_number, status=status, is_test=is_test)
        _report_lost(lost)
        if admission.limit in ("business", "server"):
            metrics.CALLS_REFUSED.labels(admission.limit).inc()
            log.warning("call refused: over the concurrent call limit",
                        extra={"call_sid": call_sid, "business_id": business.id, "limit": admission.limit,
                               "live_business": admission.live_business, "live_server": admission.live_server})
        return admission

    def _admit(self, session: Session, now: datetime, *, call_sid: str, business: Business | AnsweringBusiness,
               direction: str, from_number: str, to_number: str, status: str, is_test: bool) -> Admission:
        """Core statements, one read and one write: the webhook runs on the loop every call shares."""
        connection = session.connection()
        existing = connection.execute(_EXISTING, {"call_sid": call_sid}).first()
        if existing is not None and existing.end_reason == EndReason.LIMIT:
            return Admission(admitted=False, limit="already_refused")
        admission = self._admission(session, business, call_sid, now)
        if admission.limit:
            values = {"status": "completed", "ended_at": now, "duration_s": 0.0}
        else:
            # Set at every admission, the first of an outbound call included (its row was written
            # when the call was placed); a retried webhook signs a new token, good until the new time.
            values = {"stream_due_by": now + timedelta(seconds=self._stream_start_timeout_s)}
        if existing is None:
            # Twilio retries webhooks: a retry finds this row and does not add another.
            row = {"call_sid": call_sid, "business_id": business.id, "direction": direction,
                   "from_number": from_number, "to_number": to_number, "status": status, "is_test": is_test,
                   "end_reason": EndReason.LIMIT.value if admission.limit else None}
            connection.execute(_INSERT_CALL, {**row, **values})
        else:
            if admission.limit and existing.end_reason is None:
                values["end_reason"] = EndReason.LIMIT.value
            if not admission.limit and existing.status not in TERMINAL_STATUSES:
                values["status"] = status
            connection.execute(_UPDATE_CALL, {"admitted_sid": call_sid, **values})
        if admission.limit:
            return admission
        return dataclasses.replace(admission, stream_due_by=values["stream_due_by"])

    def has_room(self, session: Session, business: Business | AnsweringBusiness) -> Admission:
        """Whether a new call would be admitted now (before placing an outbound call). Takes no lock:
        the webhook that answers the call decides."""
        # No call sid is empty: every live call counts.
        return self._admission(session, business, call_sid="", now=utcnow())

    def close_lost_streams(self, session: Session) -> int:
        """Store the calls whose stream never started as over, in the caller's transaction (on
        PostgreSQL under the admissions' lock, taken before any row lock: no deadlock with them)."""
        if session.connection().dialect.name == "postgresql":
            session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_KEY})
        lost = self._close_lost_streams(session, utcnow())
        _report_lost(lost)
        return len(lost)

    def _close_lost_streams(self, session: Session, now: datetime) -> list[tuple[str, int | None]]:
        """(call sid, business id) of each call closed."""
        # On the connection, not the session: Core statements need none of the ORM's bookkeeping.
        return [tuple(row) for row in session.connection().execute(
            _CLOSE_LOST, {"lost_before": self._lost_before(now), "closed_at": now})]

    def _lost_before(self, now: datetime) -> datetime:
        return now - timedelta(seconds=self._stream_start_margin_s)

    def _admission(self, session: Session, business: Business | AnsweringBusiness, call_sid: str,
                   now: datetime) -> Admission:
        live_server, live_business = session.connection().execute(_LIVE_COUNTS, {
            "business_id": business.id, "call_sid": call_sid, "since": now - timedelta(seconds=self._stale_after_s),
            "lost_before": self._lost_before(now)}).one()
        limit = ("business" if live_business >= business.max_concurrent_calls
                 else "server" if live_server >= self._max_server_calls else None)
        return Admission(admitted=limit is None, limit=limit, live_business=live_business, live_server=live_server)

    @contextmanager
    def _locked(self, business_id: int) -> Iterator[Session]:
        """A session whose transaction no other admission runs beside, on any worker or host."""
        with self._db.session(wait_s=self._wait_s) as session:
            connection = session.connection()
            if connection.dialect.name == "sqlite":
                # pysqlite opens transactions lazily and only before writes: take the write lock now.
                connection.exec_driver_sql("BEGIN IMMEDIATE")
            elif connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_KEY})
                session.execute(select(Business.id).where(Business.id == business_id).with_for_update())
            yield session


def _report_lost(lost: list[tuple[str, int | None]]) -> None:
    for call_sid, business_id in lost:
        metrics.CALLS_ENDED.labels(EndReason.NO_STREAM).inc()
        log.warning("call closed: its stream never started", extra={"call_sid": call_sid, "business_id": business_id})
