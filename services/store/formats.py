"""What stored values look like: phone numbers in E.164, a business's time zone."""
from __future__ import annotations

import re
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

E164 = re.compile(r"\+[1-9]\d{6,14}")
DEFAULT_TIMEZONE = "Asia/Jerusalem"


def is_e164(value: object) -> bool:
    """A phone number as stored and as Twilio sends it: +, country code, up to 15 digits."""
    return isinstance(value, str) and E164.fullmatch(value) is not None


def is_timezone(name: object) -> bool:
    if not isinstance(name, str) or not name:
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


def business_zone(name: str | None) -> ZoneInfo:
    """The business's zone; an unset or unknown name (an old row, a zone the machine lacks)
    falls back to Israel's rather than failing the call."""
    return ZoneInfo(name) if is_timezone(name) else ZoneInfo(DEFAULT_TIMEZONE)
