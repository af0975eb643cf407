"""`check_availability` and `schedule_appointment` against the database.

The calendar arithmetic is `services.scheduling` (pure); this module loads what is booked and
books. Two calls booking one slot at once: the unique (business_id, starts_at) lets one insert
through and the other gets an IntegrityError, answered as "taken" with the times still free.
"""
from __future__ import annotations

import logging
from datetime import date, datetime, timedelta, timezone
from typing import Callable, Mapping

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from services.store.db import Database
from services.store.formats import business_zone, israeli_e164
from services.store.models import Appointment, as_utc
from services.scheduling import LOOKAHEAD_DAYS, Calendar, ScheduleError, resolve_date, resolve_time, slot_fields
from services.tools.problem import ToolProblem


def normalize_phone(text: str, default: str) -> str:
    """E.164 from what the caller said ("050-1234567", "+972 50 123 4567"); no digits means `default`."""
    phone = israeli_e164(text if any(ch.isdigit() for ch in text or "") else default)
    if phone is None:
        raise ToolProblem("bad_phone", f"{text!r} is not a phone number; ask the caller to repeat it")
    return phone


class AppointmentBook:
    """One business's appointments, as one call's tools see them. Runs in a tool greenlet."""

    def __init__(self, db: Database, business, *, call_sid: str | None, caller_number: str,
                 log: logging.LoggerAdapter, now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)):
        self._db = db
        self._business_id = business.id
        self._hours = business.working_hours or {}
        self._slot_minutes = business.appointment_minutes or 30
        self._tz = business_zone(business.timezone)
        self._call_sid = call_sid
        self._caller_number = caller_number
        self._log = log
        self._now = now

    def calendar(self, day: date) -> Calendar:
        """The calendar with what is booked from `day` to the end of the look-ahead."""
        start = datetime.combine(day, datetime.min.time(), tzinfo=self._tz)
        end = start + timedelta(days=LOOKAHEAD_DAYS + 2)
        with self._db.session() as session:
            rows = session.execute(select(Appointment.starts_at, Appointment.ends_at).where(
                Appointment.business_id == self._business_id, Appointment.starts_at < end,
                Appointment.ends_at > start)).all()
        return Calendar(self._hours, self._slot_minutes, self._tz,
                        tuple((as_utc(s), as_utc(e)) for s, e in rows))

    def _day(self, text: str) -> date:
        try:
            return resolve_date(text, self._now().astimezone(self._tz).date())
        except ScheduleError as exc:
            raise ToolProblem(exc.code, str(exc)) from None

    def check_availability(self, args: Mapping[str, str]) -> dict:
        day = self._day(args.get("date", ""))
        at = None
        if (args.get("time") or "").strip():
            try:
                at = resolve_time(args["time"])
            except ScheduleError as exc:
                raise ToolProblem(exc.code, str(exc)) from None
        return {"ok": True, **self.calendar(day).availability(day, self._now(), at)}

    def schedule(self, args: Mapping[str, str]) -> dict:
        name = " ".join((args.get("name") or "").split())
        if not name or len(name) > 200:
            raise ToolProblem("bad_name", "the caller's name is needed to book; ask for it")
        phone = normalize_phone(args.get("phone", ""), self._caller_number)
        day = self._day(args.get("date", ""))
        try:
            at = resolve_time(args.get("time", ""))
            calendar = self.calendar(day)
            start = calendar.slot(day, at, self._now())
        except ScheduleError as exc:
            raise ToolProblem(exc.code, str(exc), **self._alternatives(day)) from None
        return self.reserve(start, name=name, phone=phone, note=(args.get("note") or "").strip()[:500])

    def reserve(self, start: datetime, *, name: str, phone: str, note: str) -> dict:
        """Insert the booking; a concurrent booking of the same slot makes this one `taken`."""
        end = start + timedelta(minutes=self._slot_minutes)
        try:
            with self._db.session() as session:
                session.add(Appointment(business_id=self._business_id, starts_at=start.astimezone(timezone.utc),
                                        ends_at=end.astimezone(timezone.utc), name=name, phone=phone, note=note,
                                        call_sid=self._call_sid))
        except IntegrityError:
            self._log.info("slot taken by a concurrent booking", extra={"starts_at": start.isoformat()})
            day = start.date()
            raise ToolProblem("taken", f"{day.isoformat()} {start:%H:%M} was just booked by someone else",
                              **self._alternatives(day)) from None
        self._log.info("appointment booked", extra={"starts_at": start.isoformat(), "minutes": self._slot_minutes})
        return {"ok": True, "booked": True, **slot_fields(start.astimezone(self._tz)), "minutes": self._slot_minutes,
                "name": name, "phone": phone}

    def _alternatives(self, day: date) -> dict:
        """What is still free on the day (or the next free time), for the model to offer."""
        availability = self.calendar(day).availability(day, self._now())
        keys = ("free_times", "next_free", "working_hours")
        return {"alternatives": {k: availability[k] for k in keys if availability.get(k)}}
