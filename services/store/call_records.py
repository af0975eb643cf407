"""Queries and updates of call rows shared by the webhooks and the call session."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.store.end_reasons import EndReason
from services.store.models import Business, Call, PhoneNumber, as_utc, utcnow

# Twilio CallStatus values after which the call is over.
TERMINAL_STATUSES = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})
KNOWN_STATUSES = TERMINAL_STATUSES | {"queued", "initiated", "ringing", "in-progress"}


def business_for_number(session: Session, e164: str) -> Business | None:
    return session.scalar(select(Business).join(PhoneNumber).where(PhoneNumber.e164 == e164))


@dataclass(frozen=True)
class AnsweringBusiness:
    """What answering a call needs of its business: which one, and its call limit."""
    id: int
    max_concurrent_calls: int


_ANSWERING_BUSINESS = (select(Business.id, Business.max_concurrent_calls).join(PhoneNumber)
                       .where(PhoneNumber.e164 == bindparam("e164")))


def answering_business(session: Session, e164: str) -> AnsweringBusiness | None:
    """The business whose number this is, as the webhook needs it: one Core statement, built
    once, and no entity to load (a third of the time, on the loop every call shares)."""
    row = session.connection().execute(_ANSWERING_BUSINESS, {"e164": e164}).first()
    return AnsweringBusiness(*row) if row else None


def open_call(session: Session, *, call_sid: str, business: Business | None, direction: str,
              from_number: str, to_number: str, status: str, end_reason: EndReason | None = None,
              is_test: bool = False) -> Call:
    """The call's row, created once: Twilio retries webhooks, and a retry must not duplicate it."""
    call = session.scalar(select(Call).where(Call.call_sid == call_sid))
    if call is None:
        call = Call(call_sid=call_sid, business_id=business.id if business else None, direction=direction,
                    from_number=from_number, to_number=to_number, status=status, end_reason=end_reason,
                    is_test=is_test)
        session.add(call)
        try:
            session.flush()
        except IntegrityError:
            session.rollback()
            call = session.scalar(select(Call).where(Call.call_sid == call_sid))
    if end_reason and call.end_reason is None:
        call.end_reason = end_reason
    return call


def set_transfer_to(session: Session, call_sid: str, number: str) -> bool:
    """Where `/webhook/stream_ended` sends the call when its stream closes (it asks at once, so
    this is written before). False when the call has no row."""
    call = session.scalar(select(Call).where(Call.call_sid == call_sid))
    if call is None:
        return False
    call.transfer_to = number
    return True


def apply_status(session: Session, call_sid: str, status: str, duration_s: float | None) -> Call | None:
    call = session.scalar(select(Call).where(Call.call_sid == call_sid))
    if call is None:
        return None
    now = utcnow()
    if status == "in-progress" and call.answered_at is None:
        call.answered_at = now
    if status in TERMINAL_STATUSES:
        if call.end_reason == EndReason.NO_STREAM:
            # We closed it only because its stream never started: Twilio knows how the call ended.
            call.ended_at, call.duration_s, call.end_reason = now, None, None
        if call.ended_at is None:
            call.ended_at = now
        if duration_s is not None:
            call.duration_s = duration_s
        elif call.duration_s is None:
            call.duration_s = _seconds_between(call.answered_at or call.started_at, call.ended_at)
        if call.end_reason is None:
            call.end_reason = EndReason.CALLER_HANGUP if status == "completed" else EndReason(status)
    if call.status not in TERMINAL_STATUSES or status in TERMINAL_STATUSES:
        call.status = status
    return call


def _seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((as_utc(end) - as_utc(start)).total_seconds(), 3)
