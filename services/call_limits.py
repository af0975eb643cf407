"""Concurrent call limits, per business and for the whole deployment, decided in the database.

Several gunicorn workers and hosts share one database, so counting the live calls and writing
the new call's row are one transaction under a lock: on PostgreSQL a transaction-level advisory
lock (the deployment-wide count) and the business row `FOR UPDATE`; on SQLite `BEGIN IMMEDIATE`
(one writer at a time). Decided at the webhook, before the stream TwiML is returned.

A call holds a slot while its row is not over (no terminal status, no end time) and is younger
than the longest a call can last plus a margin: status callbacks close calls whose stream never
opened, and a worker that crashed mid-call never holds a slot for good.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Iterator

from sqlalchemy import bindparam, case, func, select, text
from sqlalchemy.orm import Session

from services import metrics
from services.store.call_records import TERMINAL_STATUSES, open_call
from services.store.db import Database
from services.store.end_reasons import EndReason
from services.store.models import Business, Call, utcnow
from services.settings import Settings

# The advisory lock's key: any constant all processes agree on ("calls" in ASCII).
_ADVISORY_KEY = 0x63616C6C73
log = logging.getLogger("limits")

# A call holds a slot while this is true of its row (and it started after the stale cut-off).
_LIVE = (Call.ended_at.is_(None), Call.status.not_in(TERMINAL_STATUSES))
# The deployment's live calls and the business's, but for the call being admitted (a retried
# webhook must not count itself): one statement, built once, as the webhook runs on the loop.
_LIVE_COUNTS = select(
    func.count(),
    func.coalesce(func.sum(case((Call.business_id == bindparam("business_id"), 1), else_=0)), 0),
).select_from(Call).where(*_LIVE, Call.started_at >= bindparam("since"), Call.call_sid != bindparam("call_sid"))


@dataclass(frozen=True)
class Admission:
    admitted: bool
    limit: str | None = None  # "business" | "server" when refused
    live_business: int = 0
    live_server: int = 0


class CallLimits:
    def __init__(self, db: Database, max_server_calls: int, stale_after_s: float):
        self._db = db
        self._max_server_calls = max_server_calls
        self._stale_after_s = stale_after_s

    @classmethod
    def from_settings(cls, db: Database, settings: Settings) -> "CallLimits":
        timing = settings.timing
        return cls(db, settings.max_concurrent_calls, stale_after_s=timing.max_call_s + timing.stale_call_margin_s)

    def admit(self, *, call_sid: str, business: Business, direction: str, from_number: str, to_number: str,
              status: str) -> Admission:
        """Count the live calls and write this call's row, atomically. A refused call's row is
        stored as over, with end reason `limit`. A retried webhook gets the first answer again."""
        with self._locked(business.id) as session:
            existing = session.scalar(select(Call).where(Call.call_sid == call_sid))
            if existing is not None and existing.end_reason == EndReason.LIMIT:
                return Admission(admitted=False, limit="already_refused")
            admission = self._admission(session, business, call_sid)
            limit = admission.limit
            call = open_call(session, call_sid=call_sid, business=business, direction=direction,
                             from_number=from_number, to_number=to_number, status=status,
                             end_reason=EndReason.LIMIT if limit else None)
            if limit:
                call.status, call.ended_at, call.duration_s = "completed", utcnow(), 0.0
            elif call.status not in TERMINAL_STATUSES:
                call.status = status
        if limit:
            metrics.CALLS_REFUSED.labels(limit).inc()
            log.warning("call refused: over the concurrent call limit",
                        extra={"call_sid": call_sid, "business_id": business.id, "limit": limit,
                               "live_business": admission.live_business, "live_server": admission.live_server})
        return admission

    def has_room(self, session: Session, business: Business) -> Admission:
        """Whether a new call would be admitted now (before placing an outbound call). Takes no lock:
        the webhook that answers the call decides."""
        return self._admission(session, business, call_sid="")  # no call sid is empty: every live call counts

    def _admission(self, session: Session, business: Business, call_sid: str) -> Admission:
        since = utcnow() - timedelta(seconds=self._stale_after_s)
        live_server, live_business = session.execute(_LIVE_COUNTS, {
            "business_id": business.id, "call_sid": call_sid, "since": since}).one()
        limit = ("business" if live_business >= business.max_concurrent_calls
                 else "server" if live_server >= self._max_server_calls else None)
        return Admission(admitted=limit is None, limit=limit, live_business=live_business, live_server=live_server)

    @contextmanager
    def _locked(self, business_id: int) -> Iterator[Session]:
        """A session whose transaction no other admission runs beside, on any worker or host."""
        with self._db.session() as session:
            connection = session.connection()
            if connection.dialect.name == "sqlite":
                # pysqlite opens transactions lazily and only before writes: take the write lock now.
                connection.exec_driver_sql("BEGIN IMMEDIATE")
            elif connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_KEY})
                session.execute(select(Business.id).where(Business.id == business_id).with_for_update())
            yield session
