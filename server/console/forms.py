"""The console's forms as the API's bodies: what a browser posts, turned into what the API's models take.

Validation is the API's own (`server.api_schemas`): this module only undoes what HTML forms do
to values (everything text, unchecked boxes absent, CRLF new lines in textareas).
"""
from __future__ import annotations

import re
from typing import Any, Mapping
from urllib.parse import urlsplit

TEXT_FIELDS = ("name", "business_prompt", "greeting", "outbound_greeting", "voicemail_message", "timezone", "voice")
OPTIONAL_FIELDS = ("transfer_number", "webhook_url")  # empty: none
FLAG_FIELDS = ("transfer_on_shutdown", "use_customer_name", "record_calls", "recording_notice")
COUNT_FIELDS = ("max_concurrent_calls", "appointment_minutes")
# A select each: the option's value is the API's.
CHOICE_FIELDS = {"transfer_mode": ("warm", "cold"), "barge_in_mode": ("hold", "immediate", "off")}
DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")  # the API's keys, Israel's week
# Israel's public holidays and their eves: left empty, the calendar's default (holidays closed,
# eves until 13:00); "closed" (or "סגור") closes them outright.
SPECIAL_DAYS = ("holiday", "eve")
CLOSED_WORDS = ("closed", "סגור")
# The "voice and listening" section: the business's Realtime choices, one input each; an empty
# one follows the server's default (services.realtime_settings).
REALTIME_FIELDS = ("rt_model", "rt_turn_detection", "rt_threshold", "rt_prefix_padding_ms", "rt_silence_duration_ms",
                   "rt_eagerness", "rt_noise_reduction", "rt_speed", "rt_max_output_tokens",
                   "rt_transcription_model", "rt_transcription_language")
SERVER_VAD_FIELDS = ("threshold", "prefix_padding_ms", "silence_duration_ms")


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
    for name in CHOICE_FIELDS:
        if name in form:
            body[name] = form[name].strip()
    if "phone_numbers" in form:
        body["phone_numbers"] = [line.strip() for line in form["phone_numbers"].splitlines() if line.strip()]
    if "backchannel_words" in form:  # one a line, or separated by commas
        body["backchannel_words"] = [w.strip() for w in re.split(r"[\n,]", form["backchannel_words"]) if w.strip()]
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
    if any(name in form for name in REALTIME_FIELDS):
        body["realtime"] = realtime_choices(form)
    return body, problems


def realtime_choices(form: Mapping[str, str]) -> dict[str, Any]:
    """The section's inputs as the API's `realtime` object: every key, null where the input is
    empty (back to the default). Numbers become numbers; other text goes as written, for the
    model's own message (as the VAD fields of the other turn detection do)."""
    given = {name: form.get(f"rt_{name}", "").strip() for name in (
        "model", "turn_detection", *SERVER_VAD_FIELDS, "eagerness", "noise_reduction", "speed",
        "max_output_tokens", "transcription_model", "transcription_language")}
    kind = given["turn_detection"] or ("server_vad" if any(given[n] for n in SERVER_VAD_FIELDS) else "")
    detection = None
    if kind:
        detection = {"type": kind, **{name: _number(given[name]) for name in SERVER_VAD_FIELDS if given[name]}}
        if given["eagerness"]:
            detection["eagerness"] = given["eagerness"]
    transcription = {key: given[f"transcription_{key}"] for key in ("model", "language")
                     if given[f"transcription_{key}"]}
    tokens = given["max_output_tokens"]
    return {
        "model": given["model"] or None,
        "turn_detection": detection,
        "noise_reduction": given["noise_reduction"] or None,
        "speed": _number(given["speed"]) if given["speed"] else None,
        "max_output_tokens": (tokens if tokens == "inf" else _number(tokens)) if tokens else None,
        "transcription": transcription or None,
    }


def realtime_values(chosen: Mapping[str, Any] | None) -> dict[str, str]:
    """A business's stored choices as the section shows them: empty where it has none."""
    chosen = chosen or {}
    detection = chosen.get("turn_detection") or {}
    transcription = chosen.get("transcription") or {}
    values = {
        "rt_model": chosen.get("model"), "rt_turn_detection": detection.get("type"),
        "rt_eagerness": detection.get("eagerness"), "rt_noise_reduction": chosen.get("noise_reduction"),
        "rt_speed": chosen.get("speed"), "rt_max_output_tokens": chosen.get("max_output_tokens"),
        "rt_transcription_model": transcription.get("model"), "rt_transcription_language": transcription.get("language"),
        **{f"rt_{name}": detection.get(name) for name in SERVER_VAD_FIELDS},
    }
    return {name: "" if value is None else str(value) for name, value in values.items()}


def _number(text: str) -> int | float | str:
    if re.fullmatch(r"\d{1,9}", text):
        return int(text)
    if re.fullmatch(r"\d{0,9}\.\d{1,9}", text):
        return float(text)
    return text


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
