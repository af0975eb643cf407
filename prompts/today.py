"""The "today" layer: the date, the business's hours today and the holidays ahead.

The model knows no date of its own. Told today's date (Gregorian and Hebrew) and the hours,
it can say that the business is closed today and why, and it does not offer a holiday. The
facts come from the caller (`services.scheduling.today_facts`): this module only words them.
"""
from __future__ import annotations

from dataclasses import dataclass

from prompts.layers import Layer
from prompts.templates import fill, sections


@dataclass(frozen=True)
class DayFacts:
    date_text: str  # "יום שלישי 1.12.2026"
    hebrew_date: str  # "י״א כסלו תשפ״ז"
    hours: str | None  # "09:00-13:00, 16:00-19:00"; "" when closed, None when the business gives no hours
    special: str | None = None  # "ערב פסח", "יום כיפור"


@dataclass(frozen=True)
class TodayFacts:
    today: DayFacts
    time_text: str  # "14:05", the business's local time when the call began
    ahead: tuple[DayFacts, ...] = ()  # the holidays and eves within the booking look-ahead


def _hours(day: DayFacts, texts: dict[str, str]) -> str:
    return day.hours or texts["Closed"]


def build_today_layer(facts: TodayFacts | None) -> Layer:
    if facts is None:
        return Layer("")
    texts = dict(sections("today.md"))
    today = facts.today
    lines = [fill(texts["Today"], {"date": today.date_text, "hebrew_date": today.hebrew_date,
                                   "time": facts.time_text})[0]]
    if today.hours is not None:
        lines.append(fill(texts["Hours today"], {"hours": _hours(today, texts)})[0])
    if today.special:
        lines.append(fill(texts["Special today"], {"name": today.special})[0])
    if facts.ahead:
        lines.append(texts["Ahead"])
        lines += [f"- {day.date_text}, {day.special}" + (f": {_hours(day, texts)}" if day.hours is not None else "")
                  for day in facts.ahead]
    return Layer("## " + texts["Heading"] + "\n" + "\n".join(lines))
