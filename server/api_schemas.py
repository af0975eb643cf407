"""What the admin API accepts: pure functions, no Flask, no session.

A validator takes a decoded JSON value (or a query-string value) and returns the value
to store, or raises ValueError with a message for the client.
"""
from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Mapping
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from services.store.call_records import KNOWN_STATUSES
from services.store.models import as_utc

Validator = Callable[[Any], Any]

VOICES = ("alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar")
DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
GENDERS = ("male", "female")
E164 = re.compile(r"\+[1-9]\d{6,14}")
CLOCK = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")
MAX_ID = 2**63 - 1


class ValidationError(Exception):
    """Input that does not fit; `fields` maps each bad field to what is wrong with it."""

    def __init__(self, fields: dict[str, str]):
        super().__init__("invalid fields: " + ", ".join(sorted(fields)))
        self.fields = fields


# --- validators -------------------------------------------------------------------------

def e164(value: Any) -> str:
    if not isinstance(value, str) or not E164.fullmatch(value):
        raise ValueError("must be an E.164 number such as +972501234567")
    return value


def optional(check: Validator) -> Validator:
    return lambda value: None if value is None else check(value)


def text(max_len: int | None = None, *, required: bool = False, min_len: int = 0) -> Validator:
    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError("must be a string")
        if required and not value.strip():
            raise ValueError("must not be empty")
        if len(value) < min_len:
            raise ValueError(f"must be at least {min_len} characters")
        if max_len is not None and len(value) > max_len:
            raise ValueError(f"must be at most {max_len} characters")
        return value
    return check


def one_of(choices: Iterable[str]) -> Validator:
    choices = tuple(choices)

    def check(value: Any) -> str:
        if not isinstance(value, str) or value not in choices:
            raise ValueError("must be one of: " + ", ".join(choices))
        return value
    return check


def int_between(low: int, high: int) -> Validator:
    def check(value: Any) -> int:
        # bool is an int subclass; true is not a count.
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"must be an integer from {low} to {high}")
        return value
    return check


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def http_url(max_len: int) -> Validator:
    def check(value: Any) -> str:
        parts = urlsplit(value) if isinstance(value, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc or len(value) > max_len:
            raise ValueError(f"must be an http:// or https:// URL of at most {max_len} characters")
        return value
    return check


def timezone_name(value: Any) -> str:
    if isinstance(value, str):
        try:
            ZoneInfo(value)
            return value
        except (ZoneInfoNotFoundError, ValueError, OSError):
            pass
    raise ValueError("must be an IANA time zone such as Asia/Jerusalem")


def phone_numbers(value: Any) -> list[str]:
    if not isinstance(value, list):
        raise ValueError("must be a list of E.164 numbers")
    numbers: list[str] = []
    for item in value:
        try:
            number = e164(item)
        except ValueError:
            raise ValueError(f"{json.dumps(item, ensure_ascii=False)} is not an E.164 number such as +972501234567") from None
        if number in numbers:
            raise ValueError(f"{number} is listed twice")
        numbers.append(number)
    return numbers


def _clock_minutes(value: Any, *, allow_midnight_end: bool = False) -> int | None:
    if allow_midnight_end and value == "24:00":
        return 24 * 60
    match = CLOCK.fullmatch(value) if isinstance(value, str) else None
    return int(match[1]) * 60 + int(match[2]) if match else None


def working_hours(value: Any) -> dict[str, list[list[str]]]:
    """{"sun": [["09:00", "13:00"], ["16:00", "19:00"]], ...}; a day left out is closed."""
    if not isinstance(value, dict):
        raise ValueError("must be an object with keys " + ", ".join(DAYS))
    unknown = [day for day in value if day not in DAYS]
    if unknown:
        raise ValueError(f"unknown day {unknown[0]!r}; days are " + ", ".join(DAYS))
    shape = 'a list of ["HH:MM", "HH:MM"] ranges, start before end'
    for day, ranges in value.items():
        if not isinstance(ranges, list):
            raise ValueError(f"{day}: must be {shape}")
        spans = []
        for pair in ranges:
            ok = isinstance(pair, list) and len(pair) == 2
            start = _clock_minutes(pair[0]) if ok else None
            end = _clock_minutes(pair[1], allow_midnight_end=True) if ok else None
            if start is None or end is None or start >= end:
                raise ValueError(f"{day}: {json.dumps(pair, ensure_ascii=False)} is not a range; must be {shape}")
            spans.append((start, end))
        spans.sort()
        if any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:])):
            raise ValueError(f"{day}: ranges overlap")
    return {day: [list(pair) for pair in value[day]] for day in DAYS if day in value}


def query_int(low: int, high: int = MAX_ID) -> Validator:
    def check(value: str) -> int:
        if not re.fullmatch(r"\d{1,19}", value) or not low <= int(value) <= high:
            raise ValueError(f"must be an integer from {low} to {high}")
        return int(value)
    return check


def iso_datetime(value: str) -> datetime:
    """An ISO-8601 time in UTC; one without an offset is taken as UTC, like everything stored."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("must be an ISO-8601 datetime such as 2025-01-31T08:00:00Z") from None
    return as_utc(parsed).astimezone(timezone.utc)


def clean(data: Mapping[str, Any], validators: Mapping[str, Validator], required: Iterable[str] = ()) -> dict[str, Any]:
    """The given fields, validated; every problem at once, unknown names included."""
    errors = {name: "unknown field" for name in data if name not in validators}
    errors.update({name: "required" for name in required if name not in data})
    cleaned: dict[str, Any] = {}
    for name, value in data.items():
        if name in validators:
            try:
                cleaned[name] = validators[name](value)
            except ValueError as exc:
                errors[name] = str(exc)
    if errors:
        raise ValidationError(errors)
    return cleaned


BUSINESS_FIELDS: dict[str, Validator] = {
    "name": text(200, required=True),
    "phone_numbers": phone_numbers,
    "voice": one_of(VOICES),
    "business_prompt": text(),
    "greeting": text(),
    "outbound_greeting": text(),
    "transfer_number": optional(e164),
    "timezone": timezone_name,
    "working_hours": working_hours,
    "max_concurrent_calls": int_between(1, 1000),
    "use_customer_name": boolean,
    "voicemail_message": text(1000),
    "appointment_minutes": int_between(5, 480),
    "webhook_url": optional(http_url(500)),
    "webhook_secret": text(128, min_len=16),
    "record_calls": boolean,
}

LEAD_FIELDS: dict[str, Validator] = {
    "business_id": int_between(1, MAX_ID),
    "phone": e164,
    "name": optional(text(200)),
    "gender": optional(one_of(GENDERS)),
    "notes": text(),
}

PAGE_QUERY: dict[str, Validator] = {"limit": query_int(1, 500), "offset": query_int(0)}

CALL_QUERY: dict[str, Validator] = {
    "business_id": query_int(1),
    "status": one_of(sorted(KNOWN_STATUSES)),
    "since": iso_datetime,
    **PAGE_QUERY,
}

LEAD_QUERY: dict[str, Validator] = {"business_id": query_int(1), "phone": e164, **PAGE_QUERY}

OUTBOUND_FIELDS: dict[str, Validator] = {
    "business_id": int_between(1, MAX_ID),
    "to": e164,
    "lead_id": optional(int_between(1, MAX_ID)),
}

APPOINTMENT_QUERY: dict[str, Validator] = {
    "business_id": query_int(1),
    "phone": e164,
    "from": iso_datetime,
    "to": iso_datetime,
    **PAGE_QUERY,
}


def clean_business(data: Mapping[str, Any], *, partial: bool) -> dict[str, Any]:
    return clean(data, BUSINESS_FIELDS, () if partial else ("name",))


def clean_outbound(data: Mapping[str, Any]) -> dict[str, Any]:
    return clean(data, OUTBOUND_FIELDS, ("business_id", "to"))


def clean_lead(data: Mapping[str, Any]) -> dict[str, Any]:
    return clean(data, LEAD_FIELDS, ("business_id", "phone"))


def clean_query(args: Mapping[str, str], validators: Mapping[str, Validator]) -> dict[str, Any]:
    """Query filters plus paging (limit 50, offset 0 unless given)."""
    return {"limit": 50, "offset": 0, **clean(args, validators)}
