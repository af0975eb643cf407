"""Israel's holidays in the working hours, and days and times as Israeli callers say them."""
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyluach import dates

from prompts import build_today_layer
from server.api_schemas import working_hours as validate_working_hours
from services.hebrew_calendar import DayKind, hebrew_date, hebrew_date_text, independence_day, special_day
from services.scheduling import Calendar, ScheduleError, resolve_date, resolve_time, today_facts, working_ranges

TZ = ZoneInfo("Asia/Jerusalem")
WEEK = {day: [["09:00", "17:00"]] for day in ("sun", "mon", "tue", "wed", "thu")} | {"fri": [["08:00", "12:00"]]}


# --- the calendar ------------------------------------------------------------------------------

# From the government's published calendar of rest days (Israel, one day of each festival).
REST_DAYS = {
    date(2026, 4, 2): "פסח", date(2026, 4, 8): "שביעי של פסח", date(2026, 4, 22): "יום העצמאות",
    date(2026, 5, 22): "שבועות", date(2026, 9, 12): "ראש השנה", date(2026, 9, 13): "ראש השנה",
    date(2026, 9, 21): "יום כיפור", date(2026, 9, 26): "סוכות", date(2026, 10, 3): "שמחת תורה",
    date(2025, 5, 1): "יום העצמאות", date(2024, 5, 14): "יום העצמאות",
}
EVES = {date(2026, 4, 1): "ערב פסח", date(2026, 4, 21): "יום הזיכרון", date(2026, 9, 11): "ערב ראש השנה",
        date(2026, 9, 20): "ערב יום כיפור", date(2026, 10, 2): "הושענא רבה"}


@pytest.mark.parametrize("day,name", sorted(REST_DAYS.items()))
def test_rest_days_are_israels(day, name):
    assert special_day(day).kind is DayKind.HOLIDAY
    assert special_day(day).name == name


@pytest.mark.parametrize("day,name", sorted(EVES.items()))
def test_eves(day, name):
    assert special_day(day).kind is DayKind.EVE
    assert special_day(day).name == name


def test_ordinary_days_and_the_diasporas_second_days_are_not_special():
    for day in (date(2026, 4, 3), date(2026, 4, 9), date(2026, 5, 23), date(2026, 12, 1), date(2026, 9, 27)):
        assert special_day(day) is None, day


@given(st.integers(min_value=5760, max_value=5900))
def test_independence_day_never_touches_shabbat(year):
    day = independence_day(year)
    assert day.weekday() in (1, 2, 3)  # Tuesday to Thursday: Memorial Day, the day before, never follows Shabbat
    fifth_of_iyar = dates.HebrewDate(year, 2, 5).to_pydate()
    assert -2 <= (day - fifth_of_iyar).days <= 1


@given(st.dates(min_value=date(2000, 1, 1), max_value=date(2099, 12, 31)))
@settings(max_examples=300)
def test_an_eve_is_the_day_before_a_rest_day_and_no_rest_day_itself(day):
    special = special_day(day)
    if special is not None and special.kind is DayKind.EVE:
        assert special_day(day + timedelta(days=1)).kind is DayKind.HOLIDAY
    if special is not None and special.kind is DayKind.HOLIDAY and special_day(day - timedelta(days=1)) is None:
        pytest.fail(f"{day} ({special.name}) has no eve")


# --- working hours ------------------------------------------------------------------------------

def test_a_holiday_is_closed_and_its_eve_ends_at_one():
    assert working_ranges(WEEK, date(2026, 4, 2)) == []  # Pesach, a Thursday
    assert working_ranges(WEEK, date(2026, 4, 1)) == [(9 * 60, 13 * 60)]  # its eve, a Wednesday
    assert working_ranges(WEEK, date(2026, 3, 31)) == [(9 * 60, 17 * 60)]


def test_the_business_chooses_its_holiday_and_eve_hours():
    hours = WEEK | {"holiday": [["10:00", "12:00"]], "eve": [["08:00", "11:00"]]}
    assert working_ranges(hours, date(2026, 4, 2)) == [(10 * 60, 12 * 60)]
    assert working_ranges(hours, date(2026, 4, 1)) == [(8 * 60, 11 * 60)]
    assert working_ranges(hours, date(2026, 9, 12)) == []  # Rosh Hashana on Shabbat: closed on Shabbat anyway
    assert validate_working_hours(hours)["holiday"] == [["10:00", "12:00"]]
    with pytest.raises(ValueError, match="unknown day"):
        validate_working_hours({"hag": [["10:00", "12:00"]]})


def test_availability_never_offers_a_holiday_and_says_why():
    calendar = Calendar(WEEK, 30, TZ)
    now = datetime(2026, 3, 31, 18, 0, tzinfo=TZ)
    pesach = calendar.availability(date(2026, 4, 2), now)
    assert pesach["free_times"] == [] and pesach["special_day"] == "פסח"
    assert pesach["problem"] == "the business is closed on that day"
    assert pesach["next_free"]["date"] == "2026-04-03"  # the Friday after: its usual hours
    eve = calendar.availability(date(2026, 4, 1), now)
    assert eve["free_times"][-1] == "12:30" and eve["special_day"] == "ערב פסח"
    with pytest.raises(ScheduleError, match=r"closed on 2026-04-02 \(פסח\)"):
        calendar.slot(date(2026, 4, 2), time(10, 0), now)


def test_the_agent_is_told_today_is_a_holiday_and_the_holidays_ahead():
    layer = build_today_layer(today_facts(WEEK, datetime(2026, 4, 2, 9, 30, tzinfo=TZ))).text
    assert "Today is יום חמישי 2.4.2026 (ט״ו ניסן תשפ״ו)" in layer
    assert "working hours today: closed" in layer and "Today is פסח" in layer
    assert "- יום רביעי 8.4.2026, שביעי של פסח: closed" in layer
    assert "- יום שלישי 7.4.2026, ערב שביעי של פסח: 09:00-13:00" in layer
    plain = build_today_layer(today_facts(WEEK, datetime(2026, 12, 1, 9, 30, tzinfo=TZ))).text
    assert "working hours today: 09:00-17:00" in plain and "Public holidays" not in plain


# --- times said in words -----------------------------------------------------------------------

SAID = {
    "ארבע וחצי": time(16, 30), "רבע לחמש": time(16, 45), "עשרים לחמש": time(16, 40), "בשמונה בערב": time(20, 0),
    "שמונה": time(8, 0), "שמונה וחצי": time(8, 30), "רבע לתשע": time(8, 45), "בצהריים": time(12, 0),
    "שתיים בצהריים": time(14, 0), "שלוש ועשרים": time(15, 20), "אחת עשרה ורבע": time(11, 15),
    "עשרה לאחת": time(12, 50), "בעשר בבוקר": time(10, 0), "חמש דקות לשמונה": time(7, 55), "ב-16.30": time(16, 30),
    "10am": time(10, 0), "3pm": time(15, 0),
}


@pytest.mark.parametrize("said,expected", SAID.items())
def test_times_said_in_words(said, expected):
    assert resolve_time(said) == expected


HOURS = {1: "אחת", 2: "שתיים", 3: "שלוש", 4: "ארבע", 5: "חמש", 6: "שש", 7: "שבע", 8: "שמונה", 9: "תשע", 10: "עשר",
         11: "אחת עשרה", 12: "שתים עשרה"}


def _said(hour: int, minute: int) -> str:
    """How a caller says a time of a working day, with the part of the day."""
    part = "בבוקר" if hour < 12 else "בצהריים" if hour == 12 and minute < 40 else "אחר הצהריים" if hour < 17 else "בערב"
    h12, next12 = hour % 12 or 12, (hour + 1) % 12 or 12
    words = {0: HOURS[h12], 15: f"{HOURS[h12]} ורבע", 20: f"{HOURS[h12]} ועשרים", 30: f"{HOURS[h12]} וחצי",
             40: f"עשרים ל{HOURS[next12]}", 45: f"רבע ל{HOURS[next12]}", 50: f"עשרה ל{HOURS[next12]}"}[minute]
    if minute >= 40 and hour == 11:
        part = "בבוקר"
    return f"{words} {part}"


@given(st.integers(min_value=7, max_value=22), st.sampled_from([0, 15, 20, 30, 40, 45, 50]))
def test_any_working_time_said_in_words_is_understood(hour, minute):
    assert resolve_time(_said(hour, minute)) == time(hour, minute)


@given(st.integers(min_value=0, max_value=23), st.integers(min_value=0, max_value=59))
def test_any_clock_time_in_digits_is_understood(hour, minute):
    assert resolve_time(f"{hour:02d}:{minute:02d}") == time(hour, minute)
    assert resolve_time(f"{hour}.{minute:02d}") == time(hour, minute)


# --- days ------------------------------------------------------------------------------------------

TODAY = date(2026, 12, 1)


@pytest.mark.parametrize("said,expected", [
    ("בעוד שבוע", TODAY + timedelta(days=7)), ("בעוד יומיים", TODAY + timedelta(days=2)),
    ("בעוד שלושה ימים", TODAY + timedelta(days=3)), ("בעוד שבועיים", TODAY + timedelta(days=14)),
    ("יום ראשון הבא", date(2026, 12, 6)), ("מחרתיים", date(2026, 12, 3)), ("ערב פסח", date(2027, 4, 21)),
    ("ט\"ו בניסן", date(2027, 4, 22)), ("כ\"ה בכסלו", date(2026, 12, 5)), ("בחנוכה", None),
])
def test_days_as_callers_say_them(said, expected):
    if expected is None:
        with pytest.raises(ScheduleError):
            resolve_date(said, TODAY)
    else:
        assert resolve_date(said, TODAY) == expected


@given(st.integers(min_value=1, max_value=300))
def test_in_n_days(n):
    assert resolve_date(f"בעוד {n} ימים", TODAY) == TODAY + timedelta(days=n)


@given(st.integers(min_value=0, max_value=360))
def test_israeli_numeric_dates(offset):
    day = TODAY + timedelta(days=offset)
    assert resolve_date(f"{day.day}/{day.month}", TODAY) == day
    assert resolve_date(f"{day.day}.{day.month}.{day.year % 100}", TODAY) == day
    assert resolve_date(f"{day.day:02d}/{day.month:02d}/{day.year}", TODAY) == day


@given(st.integers(min_value=0, max_value=340))
def test_a_hebrew_date_as_written_is_understood(offset):
    day = TODAY + timedelta(days=offset)
    written = dates.GregorianDate.from_pydate(day).to_heb()
    said = f"{written.hebrew_day()} ב{written.month_name(hebrew=True)}"
    assert hebrew_date(said, TODAY) == day


def test_a_call_is_told_the_date_in_the_business_zone(make_harness):
    from tests.fakes.realtime_server import RealtimeScript, Reply

    h = make_harness(RealtimeScript(responses=[Reply("שלום, הגעתם למספרת הבדיקה", 600)]))
    before = datetime.now(TZ).date()
    caller = h.call()
    caller.wait_heard(600, timeout=5)
    caller.stop()
    after = datetime.now(TZ).date()
    instructions = h.fake.connections[0].client_events("session.update")[0]["session"]["instructions"]
    assert "## Today" in instructions
    assert any(f"{d.day}.{d.month}.{d.year} ({hebrew_date_text(d)})" in instructions for d in {before, after})
