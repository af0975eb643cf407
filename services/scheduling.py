"""Appointment calendar arithmetic, done by the server rather than the model.

The caller's words for a day ("מחר", "יום שלישי", "בעוד שבוע", "2/3", "ערב פסח", "ט"ו בניסן") and
a time ("16:30", "ארבע וחצי", "רבע לחמש", "בשמונה בערב"), a business's working hours (keys sun..sat,
lists of ["HH:MM", "HH:MM"]; also "holiday" and "eve" for Israel's public holidays and their eves,
which are closed and end at 13:00 when not given), its slot length, and which slots are free.
Pure: no database and no clock (`today` and `now` are given).

Slots start at each working range's start and follow each other without gaps; a booking must
start on a slot, so one unique start time per business is enough to forbid double booking.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo
from typing import Mapping, Sequence

from prompts.today import DayFacts, TodayFacts
from services.store.formats import business_zone
from services.hebrew_calendar import DayKind, hebrew_date, hebrew_date_text, special_day, special_days

DAY_KEYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # by date.weekday()
HEBREW_DAY_NAMES = ("יום שני", "יום שלישי", "יום רביעי", "יום חמישי", "יום שישי", "שבת", "יום ראשון")
MAX_LISTED_SLOTS = 16
LOOKAHEAD_DAYS = 14

_WEEKDAYS = {
    "ראשון": 6, "שני": 0, "שלישי": 1, "רביעי": 2, "חמישי": 3, "שישי": 4, "שבת": 5,
    "sunday": 6, "monday": 0, "tuesday": 1, "wednesday": 2, "thursday": 3, "friday": 4, "saturday": 5,
    "sun": 6, "mon": 0, "tue": 1, "tues": 1, "wed": 2, "thu": 3, "thur": 3, "thurs": 3, "fri": 4, "sat": 5,
}
# "יום א'" .. "יום ו'": the letters count the days from Sunday.
_LETTER_DAYS = {"א": 6, "ב": 0, "ג": 1, "ד": 2, "ה": 3, "ו": 4}
_RELATIVE = {"היום": 0, "today": 0, "מחר": 1, "tomorrow": 1, "מחרתיים": 2}
# "בעוד שבוע", "בעוד יומיים", "בעוד 3 ימים", "בעוד שלושה ימים", "in 3 days"
_IN_DAYS = re.compile(r"^(?:ב?עוד|in)\s+(?:(\S+)\s+)?(ימים|יום|יומיים|שבוע|שבועיים|שבועות|days?|weeks?)$")
_COUNT_WORDS = {"אחד": 1, "אחת": 1, "שני": 2, "שתי": 2, "שניים": 2, "שתיים": 2, "שלושה": 3, "שלוש": 3,
                "ארבעה": 4, "ארבע": 4, "חמישה": 5, "חמש": 5, "שישה": 6, "שש": 6, "שבעה": 7, "שבע": 7,
                "שמונה": 8, "תשעה": 9, "תשע": 9, "עשרה": 10, "עשר": 10}
# Words around a day name that change nothing: "ביום שלישי הבא", "next Tuesday", "this Friday".
_FILLER = {"יום", "ב", "ה", "הבא", "הקרוב", "הזה", "השבוע", "on", "next", "this", "coming", "the", "day"}
_HEBREW_PREFIXES = ("ב", "ל", "ה")
_NIQQUD = re.compile("[\u0591-\u05c7\u200e\u200f]")
_GERESH = re.compile("['\u05f3\u05f4\"]")


class ScheduleError(ValueError):
    """Input the calendar cannot use; `code` is for the model's tool result, the text says why."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


# --- the caller's words ---------------------------------------------------------------------

def _words(text: str) -> list[str]:
    text = _NIQQUD.sub("", text or "").casefold()
    words = (word.strip(".,:;-!?") for word in re.findall(r"[\w'\u05f3\u05f4\"/.:-]+", text))
    return [word for word in words if word]


def _known(word: str, table: Mapping[str, int]) -> int | None:
    """The word's value, also with one Hebrew prefix letter dropped ("בשלישי", "למחר")."""
    if word in table:
        return table[word]
    if word[:1] in _HEBREW_PREFIXES and word[1:] in table:
        return table[word[1:]]
    return None


def _is_filler(word: str) -> bool:
    return word in _FILLER or (word[:1] in _HEBREW_PREFIXES and word[1:] in _FILLER)


def resolve_date(text: str, today: date) -> date:
    """The day the caller means. A weekday name is its next occurrence after today ("Tuesday" said
    on a Tuesday is next week's: today is "היום"). D/M dates are day first, as in Israel; without
    a year, the next such date from today on."""
    words = _words(text)
    if not words:
        raise ScheduleError("bad_date", "no date given")
    later = _in_days(" ".join(words))
    if later is not None:
        return today + timedelta(days=later)
    on_hebrew_calendar = hebrew_date(_NIQQUD.sub("", text).strip(), today)
    if on_hebrew_calendar is not None:
        return on_hebrew_calendar
    if len(words) == 1:
        exact = _numeric_date(words[0], today)
        if exact is not None:
            return exact
    if "אחרי" in words and any(_known(w, _RELATIVE) == 1 for w in words):
        return today + timedelta(days=2)  # "אחרי מחר"
    found: list[date] = []
    for i, word in enumerate(words):
        offset = _known(word, _RELATIVE)
        weekday = _known(word, _WEEKDAYS)
        letter = _GERESH.sub("", word)
        if weekday is None and i > 0 and words[i - 1] in ("יום", "ביום") and letter in _LETTER_DAYS:
            weekday = _LETTER_DAYS[letter]
        if offset is not None:
            found.append(today + timedelta(days=offset))
        elif weekday is not None:
            found.append(today + timedelta(days=(weekday - today.weekday() - 1) % 7 + 1))
        elif not _is_filler(word) and letter not in _LETTER_DAYS:
            raise ScheduleError("bad_date", f"cannot read {text!r} as a day: use a weekday, מחר, or YYYY-MM-DD")
    if len(set(found)) != 1:
        raise ScheduleError("bad_date", f"cannot read {text!r} as one day: use a weekday, מחר, or YYYY-MM-DD")
    return found[0]


def _in_days(text: str) -> int | None:
    match = _IN_DAYS.match(text)
    if match is None:
        return None
    count_word, unit = match[1], match[2]
    if count_word is None:
        count = 2 if unit in ("יומיים", "שבועיים") else 1
    elif count_word.isdigit():
        count = int(count_word)
    elif count_word in _COUNT_WORDS:
        count = _COUNT_WORDS[count_word]
    else:
        return None
    weeks = unit in ("שבוע", "שבועיים", "שבועות") or unit.startswith("week")
    days = count * (7 if weeks else 1)
    return days if 0 < days <= 366 else None


def _numeric_date(word: str, today: date) -> date | None:
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", word):
            return date.fromisoformat(word)
        match = re.fullmatch(r"(\d{1,2})[/.](\d{1,2})(?:[/.](\d{2}|\d{4}))?", word)
        if match is None:
            return None
        day, month = int(match[1]), int(match[2])
        if match[3]:
            year = int(match[3])
            return date(year + 2000 if year < 100 else year, month, day)
        candidate = date(today.year, month, day)
        return candidate if candidate >= today else date(today.year + 1, month, day)
    except ValueError:
        raise ScheduleError("bad_date", f"{word!r} is not a date in the calendar") from None


_EVENING = ("אחר הצהריים", "אחרי הצהריים", "אחה\"צ", "אחהצ", "בערב", "ערב", "בלילה", "pm", "afternoon",
            "evening", "night")
_NOON = ("בצהריים", "צהריים", "noon")
_MORNING = ("בבוקר", "בוקר", "am", "morning")


# Hours as said (feminine, as Hebrew counts the clock), longest first so "אחת עשרה" wins over "אחת".
_HOUR_WORDS = {"שתים עשרה": 12, "שתיים עשרה": 12, "אחת עשרה": 11, "אחת": 1, "שתיים": 2, "שתים": 2, "שלוש": 3,
               "ארבע": 4, "חמש": 5, "שש": 6, "שבע": 7, "שמונה": 8, "תשע": 9, "עשר": 10, "צהריים": 12}
# Minutes after ("ארבע ועשרים") or before the hour ("עשרים לחמש"), as said.
_MINUTE_WORDS = {"חמישה": 5, "חמש": 5, "עשרה": 10, "עשר": 10, "רבע": 15, "עשרים": 20, "עשרים וחמישה": 25,
                 "חצי": 30, "שלושים": 30, "שלושים וחמישה": 35, "ארבעים": 40, "ארבעים וחמישה": 45}
_NUMBER = r"\d{1,2}"
_HOUR = "(?:" + "|".join(sorted(map(re.escape, _HOUR_WORDS), key=len, reverse=True)) + "|" + _NUMBER + ")"
_MINUTES = "(?:" + "|".join(sorted(map(re.escape, _MINUTE_WORDS), key=len, reverse=True)) + "|" + _NUMBER + ")"
_SPOKEN = [
    # "רבע לחמש", "עשרים לחמש", "10 ל-5"
    ("before", re.compile(rf"(?<!\S)(?:ב-?)?(?P<m>{_MINUTES})\s*(?:דקות\s*)?ל-?\s*(?P<h>{_HOUR})(?!\S)")),
    # "ארבע וחצי", "שמונה ורבע", "שלוש ועשרים", "4 ו-20 דקות", "בשמונה"
    ("after", re.compile(rf"(?<!\S)(?:ב|ל)?-?(?P<h>{_HOUR})(?:\s+ו-?\s*(?P<m>{_MINUTES}))?(?!\S)")),
]


def _value(word: str, table: Mapping[str, int]) -> int:
    return int(word) if word.isdigit() else table[word]


def _spoken_clock(raw: str) -> tuple[int, int, str, bool] | None:
    """(hour, minute, the rest of the text, whether it was a 24-hour HH:MM) from a time said in
    words or digits, or None."""
    match = re.search(r"(?<!\d)(\d{1,2})\s*[:.]\s*(\d{2})(?!\d)", raw)
    if match is not None:
        return int(match[1]), int(match[2]), raw[:match.start()] + " " + raw[match.end():], True
    for kind, pattern in _SPOKEN:
        match = pattern.search(raw)
        if match is None:
            continue
        hour = _value(match["h"], _HOUR_WORDS)
        minute = _value(match["m"], _MINUTE_WORDS) if match["m"] else 0
        if kind == "before":
            if not 0 < minute < 60:
                continue
            hour, minute = (hour - 1) % 24 or (12 if hour == 1 else 0), 60 - minute
        return hour, minute, raw[:match.start()] + " " + raw[match.end():], False
    return None


def resolve_time(text: str) -> time:
    """HH:MM on a 24-hour clock, also "16.30", "9", "4 אחר הצהריים", "ארבע וחצי", "רבע לתשע",
    "עשרים לחמש", "בשמונה בערב", "10am". An hour from 1 to 6 said without a part of the day (not
    written HH:MM) is in the afternoon: nobody books at four in the morning."""
    raw = " ".join(_NIQQUD.sub("", text or "").casefold().replace("־", "-").split())
    raw = re.sub(r"(\d)([a-z])", r"\1 \2", raw)  # "10am"
    clock = _spoken_clock(raw)
    if clock is None:
        if any(word in raw for word in _NOON):
            return time(12, 0)
        raise ScheduleError("bad_time", f"cannot read {text!r} as a time: use HH:MM on a 24-hour clock")
    hour, minute, rest, on_24_hour_clock = clock
    if "וחצי" in rest and minute == 0:
        minute = 30
    elif "ורבע" in rest and minute == 0:
        minute = 15
    evening = any(word in rest for word in _EVENING)
    noon = any(word in rest for word in _NOON)
    morning = any(word in rest for word in _MORNING)
    if evening and 1 <= hour < 12:
        hour += 12
    elif noon and 1 <= hour <= 5:
        hour += 12  # "2 בצהריים" is 14:00
    elif morning and hour == 12:
        hour = 0
    elif not (evening or noon or morning or on_24_hour_clock) and 1 <= hour <= 6:
        hour += 12
    if not (0 <= hour < 24 and 0 <= minute < 60):
        raise ScheduleError("bad_time", f"{text!r} is not a time of day")
    return time(hour, minute)


# --- working hours and slots -------------------------------------------------------------

def _minutes(clock: str) -> int:
    hours, minutes = clock.split(":")
    return int(hours) * 60 + int(minutes)


EVE_CLOSES_AT = 13 * 60  # a holiday's eve ends here unless the business gives its own "eve" hours


def working_ranges(working_hours: Mapping[str, Sequence[Sequence[str]]], day: date) -> list[tuple[int, int]]:
    """The day's working ranges as (start, end) minutes after midnight; [] when closed.

    On a public holiday: the business's "holiday" hours (closed when it gives none); on a
    holiday's eve: its "eve" hours, or the weekday's cut at 13:00. A weekday the business is
    closed on stays closed."""
    weekday = sorted((_minutes(start), _minutes(end)) for start, end in working_hours.get(DAY_KEYS[day.weekday()]) or ())
    special = special_day(day)
    if special is None or not weekday:
        return weekday
    if special.kind is DayKind.HOLIDAY:
        return sorted((_minutes(start), _minutes(end)) for start, end in working_hours.get("holiday") or ())
    if "eve" in working_hours:
        return sorted((_minutes(start), _minutes(end)) for start, end in working_hours["eve"] or ())
    return [(start, min(end, EVE_CLOSES_AT)) for start, end in weekday if start < EVE_CLOSES_AT]


def slot_starts(working_hours: Mapping[str, Sequence[Sequence[str]]], day: date, slot_minutes: int) -> list[int]:
    starts = []
    for start, end in working_ranges(working_hours, day):
        minute = start
        while minute + slot_minutes <= end:
            starts.append(minute)
            minute += slot_minutes
    return starts


def _at(day: date, minute: int, tz: tzinfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=tz) + timedelta(minutes=minute)


def slot_fields(local: datetime) -> dict[str, str]:
    """A slot as the model is told it: its date, Hebrew weekday and HH:MM, in the business's zone."""
    return {"date": local.date().isoformat(), "weekday": HEBREW_DAY_NAMES[local.weekday()], "time": f"{local:%H:%M}"}


@dataclass(frozen=True)
class Calendar:
    """One business's bookable time: hours, slot length, zone, and what is taken (UTC or aware ranges)."""

    working_hours: Mapping[str, Sequence[Sequence[str]]]
    slot_minutes: int
    tz: tzinfo
    booked: Sequence[tuple[datetime, datetime]] = ()

    def _taken(self, start: datetime, end: datetime) -> bool:
        return any(b_start < end and start < b_end for b_start, b_end in self.booked)

    def free_slots(self, day: date, now: datetime) -> list[datetime]:
        """Free slot starts of the day, in the business's zone, later than `now`."""
        slots = []
        for minute in slot_starts(self.working_hours, day, self.slot_minutes):
            start = _at(day, minute, self.tz)
            if start > now and not self._taken(start, start + timedelta(minutes=self.slot_minutes)):
                slots.append(start)
        return slots

    def slot(self, day: date, at: time, now: datetime) -> datetime:
        """The slot starting at `at` on `day`; ScheduleError saying why it cannot be booked."""
        minute = at.hour * 60 + at.minute
        ranges = working_ranges(self.working_hours, day)
        if not ranges:
            why = special_day(day)
            raise ScheduleError("closed", f"the business is closed on {day.isoformat()}"
                                + (f" ({why.name})" if why is not None else ""))
        if not any(start <= minute < end for start, end in ranges):
            raise ScheduleError("outside_hours", f"{at:%H:%M} is outside the working hours of {day.isoformat()}")
        if minute not in slot_starts(self.working_hours, day, self.slot_minutes):
            raise ScheduleError("not_a_slot", f"appointments start on the {self.slot_minutes}-minute slots listed")
        start = _at(day, minute, self.tz)
        if start <= now:
            raise ScheduleError("past", f"{day.isoformat()} {at:%H:%M} has already passed")
        if self._taken(start, start + timedelta(minutes=self.slot_minutes)):
            raise ScheduleError("taken", f"{day.isoformat()} {at:%H:%M} is already booked")
        return start

    def next_free(self, after: date, now: datetime) -> datetime | None:
        """The first free slot on a day after `after`, within the look-ahead."""
        for n in range(1, LOOKAHEAD_DAYS + 1):
            slots = self.free_slots(after + timedelta(days=n), now)
            if slots:
                return slots[0]
        return None

    def availability(self, day: date, now: datetime, at: time | None = None) -> dict:
        """What the model is told about a day (and a time on it): JSON-ready, times local."""
        free = self.free_slots(day, now)
        answer: dict = {
            "date": day.isoformat(),
            "weekday": HEBREW_DAY_NAMES[day.weekday()],
            "working_hours": [f"{s // 60:02d}:{s % 60:02d}-{e // 60:02d}:{e % 60:02d}"
                              for s, e in working_ranges(self.working_hours, day)],
            "slot_minutes": self.slot_minutes,
            "free_times": [f"{slot:%H:%M}" for slot in free[:MAX_LISTED_SLOTS]],
        }
        if len(free) > MAX_LISTED_SLOTS:
            answer["more_free_times"] = len(free) - MAX_LISTED_SLOTS
        special = special_day(day)
        if special is not None:
            answer["special_day"] = special.name  # so the agent can say why a day is closed or short
        if day < now.astimezone(self.tz).date():
            answer["problem"] = "that day has already passed"
        elif not answer["working_hours"]:
            answer["problem"] = "the business is closed on that day"
        elif not free:
            answer["problem"] = "no free times left on that day"
        if at is not None:
            try:
                self.slot(day, at, now)
                answer["requested_time"], answer["requested_time_free"] = f"{at:%H:%M}", True
            except ScheduleError as exc:
                answer["requested_time"], answer["requested_time_free"] = f"{at:%H:%M}", False
                answer["requested_time_problem"] = str(exc)
        if not free:
            later = self.next_free(day, now)
            if later is not None:
                answer["next_free"] = slot_fields(later)
        return answer


# --- what the agent is told about today ------------------------------------------------------

def _clock(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _day_facts(working_hours: Mapping[str, Sequence[Sequence[str]]] | None, day: date) -> DayFacts:
    special = special_day(day)
    return DayFacts(
        date_text=f"{HEBREW_DAY_NAMES[day.weekday()]} {day.day}.{day.month}.{day.year}",
        hebrew_date=hebrew_date_text(day),
        hours=None if not working_hours else
        ", ".join(f"{_clock(s)}-{_clock(e)}" for s, e in working_ranges(working_hours, day)),
        special=special.name if special is not None else None)


def today_facts(working_hours: Mapping[str, Sequence[Sequence[str]]] | None, now: datetime) -> TodayFacts:
    """Today and the special days of the look-ahead, for the prompt; `now` in the business's zone.
    Without working hours the agent is told the dates and holidays, not hours."""
    hours = working_hours or None
    today = now.date()
    ahead = tuple(_day_facts(hours, day) for day, _ in special_days(today + timedelta(days=1), LOOKAHEAD_DAYS))
    return TodayFacts(today=_day_facts(hours, today), time_text=f"{now:%H:%M}", ahead=ahead)


def business_today(business, now: datetime) -> TodayFacts:
    """`today_facts` for a business (its hours, in its zone) at the aware time `now`."""
    return today_facts(business.working_hours, now.astimezone(business_zone(business.timezone)))
