"""The console's forms as the API's bodies: what a browser posts, turned into what the API's models take.

Validation is the API's own (`server.api_schemas`): this module only undoes what HTML forms do
to values (everything text, unchecked boxes absent, CRLF new lines in textareas).
"""
from __future__ import annotations

from typing import Any, Mapping
from urllib.parse import urlsplit

TEXT_FIELDS = ("name", "business_prompt", "greeting", "outbound_greeting", "voicemail_message", "timezone", "voice")
OPTIONAL_FIELDS = ("transfer_number", "webhook_url")  # empty: none
FLAG_FIELDS = ("transfer_on_shutdown", "use_customer_name", "record_calls", "recording_notice")
COUNT_FIELDS = ("max_concurrent_calls", "appointment_minutes")
DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")  # the API's keys, Israel's week
# Israel's public holidays and their eves: left empty, the calendar's default (holidays closed,
# eves until 13:00); "closed" (or "סגור") closes them outright.
SPECIAL_DAYS = ("holiday", "eve")
CLOSED_WORDS = ("closed", "סגור")


def business_body(form: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """(the PATCH body the form means, problems found before the model sees it)."""
    body: dict[str, Any] = {}
    problems: dict[str, str] = {}
    for name in TEXT_FIELDS:
        if name in form:
            body[name] = _lines(form[name])
    for name in OPTIONAL_FIELDS:
        if name in form:
            body[name] = form[name].strip() or None
    for name in FLAG_FIELDS:
        body[name] = form.get(name) == "on"
    for name in COUNT_FIELDS:
        if name in form:
            value = form[name].strip()
            # Digits become a number; anything else goes as written, for the model's own message.
            body[name] = int(value) if value.isascii() and value.isdigit() and len(value) < 19 else value
    if "phone_numbers" in form:
        body["phone_numbers"] = [line.strip() for line in form["phone_numbers"].splitlines() if line.strip()]
    if form.get("webhook_secret", "").strip():
        body["webhook_secret"] = form["webhook_secret"].strip()
    if any(f"hours_{day}" in form for day in DAYS):
        body["working_hours"] = working_hours({day: form.get(f"hours_{day}", "") for day in DAYS})
        for day in SPECIAL_DAYS:
            text = form.get(f"hours_{day}", "").strip()
            if text.casefold() in CLOSED_WORDS:
                body["working_hours"][day] = []
            elif text:
                body["working_hours"].update(working_hours({day: text}))
    return body, problems


def working_hours(days: Mapping[str, str]) -> dict[str, list[list[str]]]:
    """{"sun": "09:00-13:00, 16:00-19:00", "mon": ""} as the API's {"sun": [["09:00", "13:00"], ...]}:
    an empty day is closed. A piece that is not "start-end" stays whole, for the model to name."""
    hours = {}
    for day, text in days.items():
        pieces = [piece.strip() for piece in text.split(",") if piece.strip()]
        if pieces:
            hours[day] = [[part.strip() for part in piece.split("-")] for piece in pieces]
    return hours


def hours_text(ranges: list[list[str]]) -> str:
    return ", ".join("-".join(pair) for pair in ranges)


def safe_next(target: str | None, default: str) -> str:
    """Where to go after signing in: a path of the console, never another site."""
    if not target or not target.startswith("/console") or target.startswith("//"):
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or "\\" in target:
        return default
    return target


def _lines(value: str) -> str:
    return value.replace("\r\n", "\n").replace("\r", "\n")
