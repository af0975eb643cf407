"""Outbound calls and answering machines: the agent's first words wait, a bounded time, for
Twilio's asynchronous answering machine detection; a machine is left the business's voicemail
message and the call ends.

Twilio's detection callback (/webhook/amd_status) may reach any worker; the call lives in one.
They meet in the call's row, and the row decides which of them acts on a machine:
- the webhook writes `answered_by` with one conditional UPDATE, only while a stream has claimed
  the row and `first_words_at` is empty (`record_detection`): the call's wait will read it, and
  acts;
- the call's wait (`AnsweringMachineWait`) polls `answered_by`; once it is there, or at the
  bound, it stamps `first_words_at` (again only while empty) and then reads `answered_by`:
  a machine ends the call with `voicemail_left`, and `/webhook/stream_ended` answers with the
  message (`after_stream`); anything else, or nothing, and the agent greets;
- any other result (after the greeting, or before any stream) is the webhook's: it stamps
  `first_words_at` and replaces the live call's TwiML with the message (Twilio's REST API).
The conditional statements are atomic in SQLite and PostgreSQL, so one of them sees the other.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

import gevent
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from services.store.db import Database
from services.store.end_reasons import EndReason
from services.store.models import Business, Call, utcnow

POLL_S = 0.25  # how often the waiting call reads its row: a small SELECT, a few times a second


def is_machine(answered_by: str | None) -> bool:
    """Twilio's AnsweredBy for an answering machine (machine_end_beep, _other, _silence; and
    machine_start, which DetectMessageEnd does not send) or a fax."""
    value = (answered_by or "").lower()
    return value.startswith("machine") or value == "fax"


def voicemail_text(business: Business | None) -> str:
    """The business's voicemail message; without one, a short Hebrew message in its name."""
    own = (business.voicemail_message or "").strip() if business is not None else ""
    if own:
        return own
    name = (business.name or "").strip() if business is not None else ""
    who = f"כאן {name}" if name else "חזרנו אליכם"
    return f"שלום, {who}. ניסינו להשיג אתכם ונשמח שתחזרו אלינו. תודה ולהתראות."


def machine_end_reason(answered_by: str) -> EndReason:
    """A fax cannot hear a message: nothing is left on it."""
    return EndReason.VOICEMAIL if answered_by.lower() == "fax" else EndReason.VOICEMAIL_LEFT


@dataclass(frozen=True)
class Detection:
    known: bool  # the call has a row
    late: bool = False  # the agent has spoken first already: the webhook acts on a machine
    message: str = ""  # for a late machine: the voicemail message to leave ("" hangs up)


def record_detection(session: Session, call_sid: str, answered_by: str) -> Detection:
    """/webhook/amd_status: store Twilio's result, and say who acts on it (the module's docstring)."""
    early = session.execute(update(Call).where(Call.call_sid == call_sid, Call.first_words_at.is_(None),
                                               Call.stream_claimed_at.is_not(None))
                            .values(answered_by=answered_by).execution_options(synchronize_session=False))
    if early.rowcount == 1:
        return Detection(known=True)
    call = session.scalar(select(Call).where(Call.call_sid == call_sid))
    if call is None:
        return Detection(known=False)
    call.answered_by = answered_by
    if call.first_words_at is None:  # no stream yet: one starting now greets, or learns of the machine
        call.first_words_at = utcnow()
    if not is_machine(answered_by):
        return Detection(known=True, late=True)
    reason = machine_end_reason(answered_by)
    business = session.get(Business, call.business_id) if call.business_id else None
    call.end_reason = reason  # before the stream stops: the session's end keeps it
    return Detection(known=True, late=True,
                     message=voicemail_text(business) if reason == EndReason.VOICEMAIL_LEFT else "")


def message_not_left(session: Session, call_sid: str) -> None:
    """Twilio refused the TwiML with the message: the machine answered, and nothing was left."""
    session.execute(update(Call).where(Call.call_sid == call_sid, Call.end_reason == EndReason.VOICEMAIL_LEFT)
                    .values(end_reason=EndReason.VOICEMAIL).execution_options(synchronize_session=False))


def after_stream(session: Session, call: Call) -> str | None:
    """/webhook/stream_ended: the message to say when the call ended on leaving a voicemail."""
    if call.end_reason != EndReason.VOICEMAIL_LEFT:
        return None
    return voicemail_text(session.get(Business, call.business_id) if call.business_id else None)


class AnsweringMachineWait:
    """One outbound call's wait for the detection result, on a greenlet of its own (`run`).

    Either `on_machine(answered_by)` is called (the session ends the call) or the greeting
    handed to `greet_when_known` is asked for: at once if the wait is over, else when it is."""

    def __init__(self, db: Database, call_sid: str, wait_s: float, *, on_machine: Callable[[str], None],
                 log: logging.LoggerAdapter, poll_s: float = POLL_S):
        self._db = db
        self._call_sid = call_sid
        self._deadline = time.monotonic() + wait_s
        self._wait_s = wait_s
        self._on_machine = on_machine
        self._log = log
        self._poll_s = poll_s
        # Guards: _decided, _greet. Written by the wait's greenlet (deciding) and the Realtime
        # greenlet (handing over the greeting); the greeting is asked for outside it.
        self._lock = threading.Lock()
        self._decided: str | None = None  # "human" (or no result in time) | "machine"
        self._greet: Callable[[], None] | None = None

    @property
    def pending(self) -> bool:
        """Still waiting: the caller's words get no answer yet (they may be a machine's greeting)."""
        with self._lock:
            return self._decided is None

    def greet_when_known(self, greet: Callable[[], None]) -> None:
        """The Realtime greenlet, session ready: greet now if a person (or nobody known) answered,
        else once the wait ends that way."""
        with self._lock:
            if self._decided is None:
                self._greet = greet
                return
            now = self._decided == "human"
        if now:
            greet()

    def run(self) -> None:
        answered_by = None
        warned = False
        while answered_by is None and (left := self._deadline - time.monotonic()) > 0:
            gevent.sleep(min(self._poll_s, left))
            try:
                answered_by = self._read()
            except Exception as exc:  # the bound still holds; the claim below tries once more
                if not warned:
                    warned = True
                    self._log.warning("machine detection not readable", extra={"error": str(exc)})
        try:
            answered_by = self._claim()
        except Exception:
            self._log.exception("machine detection not settled: the agent greets")
            answered_by = None
        machine = is_machine(answered_by)
        with self._lock:
            self._decided = "machine" if machine else "human"
            greet, self._greet = self._greet, None
        self._log.info("first words", extra={"answered_by": answered_by or "-", "in_time": answered_by is not None,
                                             "waited_up_to_s": self._wait_s})
        if machine:
            self._on_machine(answered_by)
        elif greet is not None:
            greet()

    def _read(self) -> str | None:
        with self._db.session() as session:
            return session.scalar(select(Call.answered_by).where(Call.call_sid == self._call_sid))

    def _claim(self) -> str | None:
        """Stamp `first_words_at` (from here a machine is the webhook's), then read the result."""
        with self._db.session() as session:
            session.execute(update(Call).where(Call.call_sid == self._call_sid, Call.first_words_at.is_(None))
                            .values(first_words_at=utcnow()).execution_options(synchronize_session=False))
            return session.scalar(select(Call.answered_by).where(Call.call_sid == self._call_sid))
