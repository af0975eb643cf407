"""The calendar arithmetic behind appointments: the caller's words for days and times, and free slots."""
from datetime import date, datetime, time, timezone
from zoneinfo import ZoneInfo

import pytest

from services.scheduling import Calendar, ScheduleError, resolve_date, resolve_time

TUESDAY = date(2025, 3, 4)  # a Tuesday
JERUSALEM = ZoneInfo("Asia/Jerusalem")
HOURS = {"sun": [["09:00", "13:00"], ["16:00", "19:00"]], "tue": [["09:00", "12:00"]], "fri": [["08:00", "10:00"]]}


@pytest.mark.parametrize("said, expected", [
    ("היום", TUESDAY), ("today", TUESDAY), ("מחר", date(2025, 3, 5)), ("למחר", date(2025, 3, 5)),
    ("tomorrow", date(2025, 3, 5)), ("מחרתיים", date(2025, 3, 6)), ("אחרי מחר", date(2025, 3, 6)),
    ("יום ראשון", date(2025, 3, 9)), ("ביום ראשון", date(2025, 3, 9)), ("בראשון", date(2025, 3, 9)),
    ("ראשון הבא", date(2025, 3, 9)), ("יום א'", date(2025, 3, 9)), ("יום ו׳", date(2025, 3, 7)),
    ("שבת", date(2025, 3, 8)), ("Sunday", date(2025, 3, 9)), ("next friday", date(2025, 3, 7)),
    ("wed", date(2025, 3, 5)),
    # The weekday of today means next week's: today is "היום".
    ("יום שלישי", date(2025, 3, 11)), ("tuesday", date(2025, 3, 11)),
    ("2025-04-01", date(2025, 4, 1)), ("10/3", date(2025, 3, 10)), ("1.3", date(2026, 3, 1)),
    ("5/3/2025", date(2025, 3, 5)), ("5.3.25", date(2025, 3, 5)), (" מחר. ", date(2025, 3, 5)),
])
def test_days_as_callers_say_them(said, expected):
    assert resolve_date(said, TUESDAY) == expected


@pytest.mark.parametrize("said", ["", "בקרוב", "31/2", "2025-13-01", "מחר או מחרתיים", "next month"])
def test_days_that_are_not_one_day_are_refused_with_a_reason(said):
    with pytest.raises(ScheduleError) as raised:
        resolve_date(said, TUESDAY)
    assert raised.value.code == "bad_date" and str(raised.value)


@pytest.mark.parametrize("said, expected", [
    ("10:00", time(10)), ("9:30", time(9, 30)), ("16.45", time(16, 45)), ("9", time(9)),
    ("4 אחר הצהריים", time(16)), ("8 בערב", time(20)), ("8 וחצי בערב", time(20, 30)), ("10 ורבע", time(10, 15)),
    ("2 בצהריים", time(14)), ("12 בצהריים", time(12)), ("10am", time(10)), ("3pm", time(15)), ("ב-11", time(11)),
])
def test_times_as_callers_say_them(said, expected):
    assert resolve_time(said) == expected


@pytest.mark.parametrize("said", ["", "בבוקר", "25:00", "10:75"])
def test_times_that_are_not_times_are_refused(said):
    with pytest.raises(ScheduleError):
        resolve_time(said)


def at(day: date, clock: str) -> datetime:
    hours, minutes = map(int, clock.split(":"))
    return datetime(day.year, day.month, day.day, hours, minutes, tzinfo=JERUSALEM)


SUNDAY = date(2025, 3, 9)
EARLY = datetime(2025, 3, 2, 6, 0, tzinfo=timezone.utc)  # well before every slot below


def test_free_slots_follow_working_hours_and_slot_length():
    calendar = Calendar(HOURS, 60, JERUSALEM)
    free = [f"{s:%H:%M}" for s in calendar.free_slots(SUNDAY, EARLY)]
    assert free == ["09:00", "10:00", "11:00", "12:00", "16:00", "17:00", "18:00"]
    half_hours = Calendar(HOURS, 30, JERUSALEM).free_slots(date(2025, 3, 7), EARLY)
    assert [f"{s:%H:%M}" for s in half_hours] == ["08:00", "08:30", "09:00", "09:30"]
    assert Calendar(HOURS, 30, JERUSALEM).free_slots(date(2025, 3, 10), EARLY) == [], "closed on Mondays"


def test_booked_and_past_slots_are_not_free():
    booked = ((at(SUNDAY, "10:00"), at(SUNDAY, "11:00")), (at(SUNDAY, "16:30"), at(SUNDAY, "17:00")))
    calendar = Calendar(HOURS, 60, JERUSALEM, booked)
    now = at(SUNDAY, "09:05")
    free = [f"{s:%H:%M}" for s in calendar.free_slots(SUNDAY, now)]
    assert free == ["11:00", "12:00", "17:00", "18:00"], "09:00 passed; 10:00 booked; 16:00 overlaps 16:30"


@pytest.mark.parametrize("clock, code", [
    ("08:00", "outside_hours"), ("13:00", "outside_hours"), ("09:15", "not_a_slot"), ("10:00", "taken"),
])
def test_a_slot_that_cannot_be_booked_says_why(clock, code):
    calendar = Calendar(HOURS, 30, JERUSALEM, ((at(SUNDAY, "10:00"), at(SUNDAY, "10:30")),))
    with pytest.raises(ScheduleError) as raised:
        calendar.slot(SUNDAY, resolve_time(clock), EARLY)
    assert raised.value.code == code


def test_closed_days_and_past_times_cannot_be_booked():
    calendar = Calendar(HOURS, 30, JERUSALEM)
    with pytest.raises(ScheduleError) as closed:
        calendar.slot(date(2025, 3, 8), time(10), EARLY)
    assert closed.value.code == "closed"
    with pytest.raises(ScheduleError) as past:
        calendar.slot(SUNDAY, time(9), at(SUNDAY, "12:00"))
    assert past.value.code == "past"
    assert calendar.slot(SUNDAY, time(12, 30), EARLY) == at(SUNDAY, "12:30")


def test_availability_answer_for_the_model():
    calendar = Calendar(HOURS, 60, JERUSALEM, ((at(SUNDAY, "10:00"), at(SUNDAY, "11:00")),))
    answer = calendar.availability(SUNDAY, EARLY, time(10))
    assert answer["weekday"] == "יום ראשון" and answer["date"] == "2025-03-09"
    assert answer["working_hours"] == ["09:00-13:00", "16:00-19:00"]
    assert answer["free_times"][:2] == ["09:00", "11:00"]
    assert answer["requested_time"] == "10:00" and answer["requested_time_free"] is False
    closed = calendar.availability(date(2025, 3, 8), EARLY)
    assert closed["problem"] == "the business is closed on that day"
    assert closed["next_free"] == {"date": "2025-03-09", "weekday": "יום ראשון", "time": "09:00"}


def test_slots_are_in_the_business_timezone_across_a_clock_change():
    # Israel moves to summer time on Friday 2025-03-28: a 09:00 slot is 06:00 UTC after it, 07:00 before.
    calendar = Calendar({"sun": [["09:00", "10:00"]]}, 60, JERUSALEM)
    before = calendar.free_slots(date(2025, 3, 23), EARLY)[0]
    after = calendar.free_slots(date(2025, 3, 30), EARLY)[0]
    assert before.astimezone(timezone.utc).hour == 7 and after.astimezone(timezone.utc).hour == 6
