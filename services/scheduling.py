"""Appointment calendar arithmetic, done by the server rather than the model.

The caller's words for a day ("מחר", "יום שלישי", "2/3") and a time ("16:30", "4 אחר הצהריים"),
a business's working hours (keys sun..sat, lists of ["HH:MM", "HH:MM"]), its slot length, and
which slots are free. Pure: no database and no clock (`today` and `now` are given).

Slots start at each working range's start and follow each other without gaps; a booking must
start on a slot, so one unique start time per business is enough to forbid double booking.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo
from typing import Mapping, Sequence

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


def resolve_time(text: str) -> time:
    """HH:MM on a 24-hour clock, also "16.30", "9", "4 אחר הצהריים", "8 וחצי בערב", "10am"."""
    raw = _NIQQUD.sub("", text or "").casefold().strip()
    match = re.search(r"(\d{1,2})(?:\s*[:.]\s*(\d{2}))?", raw)
    if match is None:
        raise ScheduleError("bad_time", f"cannot read {text!r} as a time: use HH:MM on a 24-hour clock")
    hour, minute = int(match[1]), int(match[2] or 0)
    rest = raw[:match.start()] + " " + raw[match.end():]
    if match[2] is None and "וחצי" in rest:
        minute = 30
    elif match[2] is None and "ורבע" in rest:
        minute = 15
    if any(word in rest for word in _EVENING) and 1 <= hour < 12:
        hour += 12
    elif any(word in rest for word in _NOON) and 1 <= hour <= 5:
        hour += 12  # "2 בצהריים" is 14:00
    elif any(word in rest for word in _MORNING) and hour == 12:
        hour = 0
    if not (0 <= hour < 24 and 0 <= minute < 60):
        raise ScheduleError("bad_time", f"{text!r} is not a time of day")
    return time(hour, minute)


# --- working hours and slots -------------------------------------------------------------

def _minutes(clock: str) -> int:
    hours, minutes = clock.split(":")
    return int(hours) * 60 + int(minutes)


def working_ranges(working_hours: Mapping[str, Sequence[Sequence[str]]], day: date) -> list[tuple[int, int]]:
    """The day's working ranges as (start, end) minutes after midnight; [] when closed."""
    return sorted((_minutes(start), _minutes(end)) for start, end in working_hours.get(DAY_KEYS[day.weekday()]) or ())


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
            raise ScheduleError("closed", f"the business is closed on {day.isoformat()}")
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
