"""What stored values look like: phone numbers in E.164, a business's time zone."""
from __future__ import annotations

import re
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

E164 = re.compile(r"\+[1-9]\d{6,14}")
DEFAULT_TIMEZONE = "Asia/Jerusalem"


def is_e164(value: object) -> bool:
    """A phone number as stored and as Twilio sends it: +, country code, up to 15 digits."""
    return isinstance(value, str) and E164.fullmatch(value) is not None


def israeli_e164(raw: str | None) -> str | None:
    """A number as said or typed ("050-123-4567", "+972 50 1234567", "00972501234567") in E.164,
    a local one (0 and 8 or 9 digits) taken as Israeli; None when it is not a phone number."""
    digits = re.sub(r"[^\d+]", "", raw or "")
    if digits.startswith("00"):
        digits = "+" + digits[2:]
    elif digits.startswith("972"):
        digits = "+" + digits
    elif re.fullmatch(r"0\d{8,9}", digits):
        digits = "+972" + digits[1:]
    return digits if is_e164(digits) else None


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
