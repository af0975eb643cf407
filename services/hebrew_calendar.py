"""Israel's public holidays and their eves, and days named on the Hebrew calendar.

The rest days are the festivals as kept in Israel (one day of each, not the diaspora's two):
Rosh Hashana (two days), Yom Kippur, the first day of Sukkot, Shemini Atzeret, the first and
seventh days of Pesach, Shavuot, and Independence Day. `pyluach` gives the Hebrew calendar and
the festivals; Independence Day, which it does not know, follows the Knesset's rule: 5 Iyar,
brought forward to Thursday when it falls on a Friday or Shabbat, and moved to Tuesday when it
falls on a Monday (so that Memorial Day, the day before, never follows Shabbat). The eve of each
rest day that is not itself a rest day is a short working day in most businesses; Memorial Day
is the eve of Independence Day. Pure: dates in, facts out.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta
from enum import StrEnum
from functools import lru_cache

from pyluach import dates, hebrewcal

NISAN, IYAR = 1, 2


class DayKind(StrEnum):
    HOLIDAY = "holiday"  # a rest day: most businesses are closed
    EVE = "eve"  # the day before one: most close early


@dataclass(frozen=True)
class SpecialDay:
    kind: DayKind
    name: str  # in Hebrew, as the agent would say it: "פסח", "ערב יום כיפור"


def independence_day(hebrew_year: int) -> date:
    day = dates.HebrewDate(hebrew_year, IYAR, 5).to_pydate()
    weekday = day.weekday()  # Monday is 0
    if weekday == 4:  # Friday
        return day - timedelta(days=1)
    if weekday == 5:  # Shabbat
        return day - timedelta(days=2)
    if weekday == 0:  # Monday
        return day + timedelta(days=1)
    return day


def _rest_day_name(day: date) -> str | None:
    hebrew = dates.GregorianDate.from_pydate(day).to_heb()
    name = hebrew.festival(israel=True, hebrew=True, include_working_days=False)
    if name == "פסח" and hebrew.day == 21:
        return "שביעי של פסח"
    if name == "שמיני עצרת":
        return "שמחת תורה"  # in Israel the same day, and the name people use
    if name is None and day == independence_day(hebrew.year):
        return "יום העצמאות"
    return name


@lru_cache(maxsize=4096)
def special_day(day: date) -> SpecialDay | None:
    """Whether `day` is a rest day, the eve of one, or neither (None)."""
    name = _rest_day_name(day)
    if name is not None:
        return SpecialDay(DayKind.HOLIDAY, name)
    following = _rest_day_name(day + timedelta(days=1))
    if following == "יום העצמאות":
        return SpecialDay(DayKind.EVE, "יום הזיכרון")
    if following == "שמחת תורה":
        return SpecialDay(DayKind.EVE, "הושענא רבה")
    if following is not None:
        return SpecialDay(DayKind.EVE, f"ערב {following}")
    return None


def hebrew_date_text(day: date) -> str:
    """The day on the Hebrew calendar, as written: י״א כסלו תשפ״ז."""
    return dates.GregorianDate.from_pydate(day).to_heb().hebrew_date_string()


def special_days(start: date, days: int) -> list[tuple[date, SpecialDay]]:
    """The special days from `start` on, for `days` days."""
    found = []
    for n in range(days):
        day = start + timedelta(days=n)
        special = special_day(day)
        if special is not None:
            found.append((day, special))
    return found


# --- days named on the Hebrew calendar -------------------------------------------------------

_LETTERS = {"א": 1, "ב": 2, "ג": 3, "ד": 4, "ה": 5, "ו": 6, "ז": 7, "ח": 8, "ט": 9, "י": 10, "כ": 20, "ל": 30}
_MONTHS = {"ניסן": 1, "אייר": 2, "סיון": 3, "סיוון": 3, "תמוז": 4, "אב": 5, "מנחם אב": 5, "אלול": 6, "תשרי": 7,
           "חשון": 8, "חשוון": 8, "מרחשון": 8, "מרחשוון": 8, "כסלו": 9, "כסליו": 9, "טבת": 10, "שבט": 11,
           "אדר": 12, "אדר א": 12, "אדר ב": 13}
_PUNCTUATION = re.compile("['\"\u05f3\u05f4]")


def _gematria_day(word: str) -> int | None:
    """1..30 from letters such as ט"ו, כ"ג, ל (15 and 16 are written ט"ו and ט"ז)."""
    letters = _PUNCTUATION.sub("", word)
    if not letters or any(ch not in _LETTERS for ch in letters):
        return None
    total = sum(_LETTERS[ch] for ch in letters)
    return total if 1 <= total <= 30 else None


def hebrew_date(text: str, today: date) -> date | None:
    """A day said on the Hebrew calendar, "ט"ו בניסן", "כ"ה כסלו", "ערב פסח", "סוכות": the next
    such day from today on. None when the text names no such day."""
    words = _PUNCTUATION.sub("", " ".join(text.split())).removeprefix("ב")
    if not words:
        return None
    for n in range(0, 400):
        day = today + timedelta(days=n)
        special = special_day(day)
        if special is not None and _PUNCTUATION.sub("", special.name) == words:
            return day
    parts = _PUNCTUATION.sub("", text).split()
    if len(parts) < 2:
        return None
    day_number = _gematria_day(parts[0])
    month_word = " ".join(parts[1:])
    month_word = month_word[1:] if month_word[:1] in ("ב", "ל") and month_word[1:] in _MONTHS else month_word
    month = _MONTHS.get(month_word)
    if day_number is None or month is None:
        return None
    year = dates.GregorianDate.from_pydate(today).to_heb().year
    for candidate_year in (year, year + 1):
        if month == 13 and not hebrewcal.Year(candidate_year).leap:
            continue
        try:
            found = dates.HebrewDate(candidate_year, month, day_number).to_pydate()
        except ValueError:
            continue
        if found >= today:
            return found
    return None
