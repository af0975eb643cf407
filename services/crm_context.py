"""The caller's CRM facts for one call, looked up beside the call so a slow database never delays it.

The call waits at most `CRM_WAIT_BOUND_S` for the facts before `session.update`; facts that come
later are handed over once by `late_facts()`, for the session to send as one context item.
"""
from __future__ import annotations

import threading
import time
from datetime import datetime, tzinfo
from typing import Callable

import gevent
from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from prompts import CrmFacts
from services.store.db import Database
from services.store.formats import business_zone
from services.logging_setup import call_logger
from services.store.models import Appointment, Business, Call, Lead, as_utc, utcnow
from services.scheduling import HEBREW_DAY_NAMES

# How long the call waits for the facts before `session.update`. The greeting waits on
# session.update, so this bound is added to the caller's silence whenever the lookup is slow;
# an indexed lookup takes a few milliseconds, so 0.3 s only ever runs out when something is wrong.
CRM_WAIT_BOUND_S = 0.3

Loader = Callable[[Session, int, str], CrmFacts | None]


# Everything the facts need in one statement, built once (the lookup runs on the event loop at
# every call's start): the business's zone, its lead for the number, the caller's last finished
# call and next appointment. Only ended, completed calls count: the call being set up has a row
# already, and calls that never connected (busy, no-answer, ...) were no conversation.
_PHONE, _BUSINESS = bindparam("phone"), bindparam("business_id")
_FACTS = (
    select(
        Business.timezone, Lead.id, Lead.name, Lead.gender, Lead.notes,
        select(Call.started_at)
        .where(Call.business_id == _BUSINESS, (Call.from_number == _PHONE) | (Call.to_number == _PHONE),
               Call.ended_at.is_not(None), Call.status == "completed")
        .order_by(Call.started_at.desc()).limit(1).scalar_subquery(),
        select(Appointment.starts_at)
        .where(Appointment.business_id == _BUSINESS, Appointment.phone == _PHONE,
               Appointment.starts_at > bindparam("now"))
        .order_by(Appointment.starts_at).limit(1).scalar_subquery(),
    )
    .select_from(Business)
    .outerjoin(Lead, (Lead.business_id == Business.id) & (Lead.phone == _PHONE))
    .where(Business.id == _BUSINESS)
)


def load_crm_facts(session: Session, business_id: int, phone: str) -> CrmFacts | None:
    """What this business knows about the caller at `phone`, or None when it knows nothing."""
    if not phone:
        return None
    row = session.connection().execute(_FACTS, {"business_id": business_id, "phone": phone, "now": utcnow()}).first()
    if row is None:
        return None
    timezone_name, lead_id, name, gender, notes, last_call_at, upcoming = row
    if lead_id is None and last_call_at is None and upcoming is None:
        return None
    zone = business_zone(timezone_name)
    # Names and genders go raw; the prompt's caller-data layer decides what is usable.
    return CrmFacts(
        name=name,
        gender=gender,
        last_call_at=as_utc(last_call_at),
        open_appointment=_local(upcoming, zone),
        notes=notes or None,
        zone=zone,
    )


def _local(at: datetime | None, zone: tzinfo) -> str | None:
    """An appointment time as the caller would say it: weekday, date and time in the business's zone."""
    if at is None:
        return None
    local = as_utc(at).astimezone(zone)
    return f"{HEBREW_DAY_NAMES[local.weekday()]} {local:%Y-%m-%d %H:%M}"


class CallCrmContext:
    """One call's CRM lookup: `start()` it early, `wait()` once before `session.update`,
    then poll `late_facts()` for facts that missed the bound.

    The loader greenlet is the only writer of the facts; a lookup that hangs or raises is logged
    and leaves the call without caller data.
    """

    def __init__(self, db: Database, business_id: int, phone: str, *, loader: Loader = load_crm_facts,
                 call_sid: str | None = None):
        self._db = db
        self._business_id = business_id
        self._phone = phone
        self._loader = loader
        self._log = call_logger("crm", call_sid)
        self._started = False
        # The lookup while it runs: set by start(), let go by the loader as it ends (a dead greenlet is 2 KB).
        self._greenlet: gevent.Greenlet | None = None
        # Guards: _facts, _loaded (written once, by the loader greenlet) and _handed_out
        # (written by the call's greenlet in wait() and late_facts()).
        self._lock = threading.Lock()
        self._facts: CrmFacts | None = None
        self._loaded = False
        self._handed_out = False

    def start(self) -> "CallCrmContext":
        if not self._started:
            self._started = True
            self._greenlet = gevent.spawn(self._load)
        return self

    def wait(self, bound_s: float = CRM_WAIT_BOUND_S) -> CrmFacts | None:
        """The facts if they are known within `bound_s` seconds, else None. Never raises."""
        try:
            self.start()
            greenlet = self._greenlet
            if greenlet is not None:
                greenlet.join(timeout=max(0.0, bound_s))
            with self._lock:
                if self._loaded:
                    self._handed_out = True
                    return self._facts
            self._log.info("crm facts not ready in time; they will follow if they come",
                           extra={"bound_ms": round(bound_s * 1000)})
        except Exception:
            self._log.warning("crm wait failed", exc_info=True)
        return None

    def may_have_late_facts(self) -> bool:
        """Whether `late_facts()` may yet return something: False once `wait()` handed the facts
        out, or the lookup found none."""
        with self._lock:
            return not (self._handed_out or (self._loaded and self._facts is None))

    def late_facts(self) -> CrmFacts | None:
        """Facts that arrived after `wait()` gave up: returned once, then None."""
        with self._lock:
            if not self._loaded or self._handed_out or self._facts is None:
                return None
            self._handed_out = True
            return self._facts

    def close(self) -> None:
        """Stop a lookup still running when the call ends."""
        greenlet = self._greenlet
        if greenlet is not None and not greenlet.ready():
            greenlet.kill(block=False)

    def _load(self) -> None:
        started = time.monotonic()
        try:
            with self._db.session() as session:
                facts = self._loader(session, self._business_id, self._phone)
        except Exception:
            self._log.warning("crm lookup failed; the call goes on without caller data", exc_info=True)
            facts = None
        else:
            self._log.debug("crm lookup done", extra={"found": facts is not None,
                                                      "ms": round((time.monotonic() - started) * 1000)})
        with self._lock:
            self._facts = facts
            self._loaded = True
        self._greenlet = None
