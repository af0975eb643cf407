"""Booking appointments by phone: the model calls the tools, the server keeps the calendar."""
import json
import logging
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import gevent
import requests

from services.store.models import Appointment, Business
from services.tools.appointments import AppointmentBook
from services.tools.problem import ToolProblem
from tests.conftest import CALLER_NUMBER
from tests.fakes.realtime_server import RealtimeScript, Reply, ToolCall

GREETING = Reply("שלום, הגעתם למספרת הבדיקה, איך אפשר לעזור?", 500)
# Open on public holidays and their eves too, so that no date the suite runs on changes the hours.
EVERY_DAY = {day: [["08:00", "20:00"]] for day in ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "holiday", "eve")}
SALON = {"working_hours": EVERY_DAY, "appointment_minutes": 30}


def in_two_days():
    """The day after tomorrow in the business's zone, taken when a test starts rather than when the
    module is imported (a shard may run minutes later, past midnight)."""
    return (datetime.now(ZoneInfo("Asia/Jerusalem")) + timedelta(days=2)).date()


def _tool_outputs(h, connection=0):
    conn = h.fake.connections[connection]
    return [json.loads(i["output"]) for i in conn.items_created if i["type"] == "function_call_output"]


def _appointments(h):
    with h.live.db.session() as session:
        return [(a.starts_at.replace(tzinfo=timezone.utc), a.name, a.phone, a.note, a.call_sid)
                for a in session.query(Appointment).order_by(Appointment.id)]


def _call_and_ask(h, expected_ms):
    caller = h.call()
    caller.wait_heard(GREETING.audio_ms, timeout=5)
    caller.wait_quiet(150)
    caller.speak(400)
    caller.wait_heard(expected_ms, timeout=8)
    return caller


def test_a_caller_checks_a_day_and_books_a_free_time(make_harness):
    day = in_two_days()
    h = make_harness(RealtimeScript(responses=[
        GREETING,
        ToolCall("check_availability", {"date": "מחרתיים", "time": "10:00"}),
        Reply("יש מקום בעשר, על איזה שם?", 500),
        ToolCall("schedule_appointment", {"name": "דנה כהן", "phone": "", "date": day.isoformat(),
                                          "time": "10:00", "note": "תספורת"}),
        Reply("קבעתי לך תור לעשר.", 500),
    ], caller_transcripts=["יש תור למחרתיים בעשר?", "דנה כהן"]), business=SALON)
    caller = _call_and_ask(h, GREETING.audio_ms + 500)
    caller.wait_quiet(150)
    caller.speak(400)
    caller.wait_heard(GREETING.audio_ms + 1000, timeout=8)

    # The server reads "מחרתיים" on its own clock: past midnight since `day` was taken, it is a day later.
    said_on = {day.isoformat(), in_two_days().isoformat()}

    checked, booked = _tool_outputs(h)
    assert checked["ok"] and checked["date"] in said_on and checked["requested_time_free"] is True
    assert "10:00" in checked["free_times"] and checked["working_hours"] == ["08:00-20:00"]
    assert booked["ok"] and booked["booked"] and booked["time"] == "10:00" and booked["phone"] == CALLER_NUMBER
    starts = datetime.combine(day, datetime.min.time(), tzinfo=ZoneInfo("Asia/Jerusalem")) + timedelta(hours=10)
    assert _appointments(h) == [(starts.astimezone(timezone.utc), "דנה כהן", CALLER_NUMBER, "תספורת", caller.call_sid)]

    listed = requests.get(f"{h.live.base_url}/api/appointments", params={"business_id": h.business_id},
                          timeout=5).json()
    assert [(a["name"], a["starts_at"]) for a in listed["appointments"]] == [
        ("דנה כהן", starts.astimezone(timezone.utc).isoformat().replace("+00:00", "Z"))]
    assert h.fake.invalid_events == [] and h.fake.double_responses == []


def test_a_time_outside_working_hours_is_refused_with_times_that_are_free(make_harness):
    day = in_two_days()
    h = make_harness(RealtimeScript(responses=[
        GREETING,
        ToolCall("schedule_appointment", {"name": "יוסי", "phone": "050-7654321", "date": day.isoformat(),
                                          "time": "21:00", "note": ""}),
        Reply("בתשע בערב אנחנו סגורים, אפשר בשמונה בבוקר?", 500),
    ]), business=SALON)
    _call_and_ask(h, GREETING.audio_ms + 500)
    refused = _tool_outputs(h)[0]
    assert refused["ok"] is False and refused["error"] == "outside_hours"
    assert refused["alternatives"]["free_times"][0] == "08:00"
    assert _appointments(h) == []


def test_two_calls_booking_one_slot_at_once_get_exactly_one_appointment(make_harness):
    day = in_two_days()
    book = ToolCall("schedule_appointment", {"name": "מתקשר", "phone": "", "date": day.isoformat(),
                                             "time": "12:00", "note": ""})
    h = make_harness(RealtimeScript(responses=[GREETING, book, Reply("בסדר.", 600)]), business=SALON)
    callers = [h.call(), h.call()]
    for caller in callers:
        caller.wait_heard(GREETING.audio_ms, timeout=5)
    for caller in callers:
        caller.speak(500)
    for caller in callers:
        caller.wait_heard(GREETING.audio_ms + 600, timeout=8)
    outputs = [_tool_outputs(h, i)[0] for i in range(2)]
    assert sorted(o["ok"] for o in outputs) == [False, True]
    refused = next(o for o in outputs if not o["ok"])
    assert refused["error"] == "taken" and "12:00" not in refused["alternatives"]["free_times"]
    assert len(_appointments(h)) == 1


def test_when_two_bookings_race_past_the_check_the_database_lets_one_through(live_server):
    """Both saw the slot free; the unique (business, start) turns the second insert into "taken"."""
    day = in_two_days()
    with live_server.db.session() as session:
        business = Business(name="מספרה", working_hours=EVERY_DAY, appointment_minutes=30)
        session.add(business)
        session.flush()
        session.expunge(business)
    log = logging.LoggerAdapter(logging.getLogger("tools"), {})
    books = [AppointmentBook(live_server.db, business, call_sid=f"CA{i}", caller_number=CALLER_NUMBER, log=log)
             for i in range(2)]
    slot = books[0].calendar(day).slot(day, datetime.strptime("09:00", "%H:%M").time(),
                                               datetime.now(timezone.utc))
    assert books[1].calendar(day).slot(day, slot.time(), datetime.now(timezone.utc)) == slot

    results = []

    def reserve(book):
        try:
            results.append(book.reserve(slot, name="x", phone=CALLER_NUMBER, note=""))
        except ToolProblem as problem:
            results.append(problem.result())

    gevent.joinall([gevent.spawn(reserve, book) for book in books])
    assert sorted(r["ok"] for r in results) == [False, True]
    assert next(r for r in results if not r["ok"])["error"] == "taken"
    with live_server.db.session() as session:
        assert session.query(Appointment).count() == 1


def test_appointments_api_filters_and_validates(live_server):
    base = live_server.base_url
    assert requests.get(f"{base}/api/appointments", params={"from": "yesterday"}, timeout=5).status_code == 422
    assert requests.get(f"{base}/api/appointments", params={"phone": "123"}, timeout=5).status_code == 422
    answer = requests.get(f"{base}/api/appointments", params={"from": "2025-01-01T00:00:00Z"}, timeout=5)
    assert answer.status_code == 200 and answer.json()["appointments"] == []


def test_the_slot_length_is_a_business_setting_with_a_default(live_server):
    base = live_server.base_url
    created = requests.post(f"{base}/api/businesses", json={"name": "מספרה"}, timeout=5).json()
    assert created["appointment_minutes"] == 30
    url = f"{base}/api/businesses/{created['id']}"
    assert requests.patch(url, json={"appointment_minutes": 45}, timeout=5).json()["appointment_minutes"] == 45
    assert requests.patch(url, json={"appointment_minutes": 0}, timeout=5).status_code == 422

