"""What the admin API accepts: one pydantic model per body and per list filter.

The web console's forms use the same models. `parse` validates a decoded JSON object or a
query string against one and raises `ValidationError`, which names every bad field with a
sentence for the client.
"""
from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Annotated, Any, Callable, Literal, Mapping, TypeVar
from urllib.parse import urlsplit

import pydantic
from flask import current_app, has_app_context
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PlainValidator, WrapValidator

from services import backchannel, realtime_settings
from services.store.call_records import KNOWN_STATUSES
from services.store.formats import is_e164, is_timezone
from services.store.models import BARGE_IN_MODES, as_utc

VOICES = realtime_settings.VOICES  # the openai package's built-in Realtime voices
DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
# Israel's public holidays and their eves (services.scheduling): closed, and until 13:00, unless given.
SPECIAL_DAYS = ("holiday", "eve")
GENDERS = ("male", "female")
CLOCK = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")
MAX_ID = 2**63 - 1
E164_HINT = "an E.164 number such as +972501234567"
Model = TypeVar("Model", bound=BaseModel)


class ValidationError(Exception):
    """Input that does not fit; `fields` maps each bad field to what is wrong with it."""

    def __init__(self, fields: dict[str, str]):
        super().__init__("invalid fields: " + ", ".join(sorted(fields)))
        self.fields = fields


def parse(model: type[Model], data: Mapping[str, Any]) -> Model:
    """`data` as a `model`; every problem at once, unknown names included."""
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        raise ValidationError(field_messages(exc)) from None


# pydantic's own errors, worded for the fields whose type leaves them as they are (no `says`).
WORDING = {
    "missing": "required",
    "extra_forbidden": "unknown field",
    "string_type": "must be a string",
    "string_too_short": "must be at least {min_length} characters",
    "string_too_long": "must be at most {max_length} characters",
}


def field_messages(exc: pydantic.ValidationError) -> dict[str, str]:
    """One sentence per top-level field: ours as raised, pydantic's reworded."""
    messages: dict[str, str] = {}
    for error in exc.errors(include_url=False):
        name = str(error["loc"][0]) if error["loc"] else "body"
        template = WORDING.get(error["type"])
        if error["type"] == "value_error":
            message = str(error["ctx"]["error"])
        elif template is not None:
            message = template.format(**error.get("ctx", {}))
        else:
            message = error["msg"]
        messages.setdefault(name, message)
    return messages


# --- field types ------------------------------------------------------------------------

def says(message: str, test: Callable[[Any], bool] | None = None) -> WrapValidator:
    """Any failure, of the type's own checks or of `test`, reads as `message`."""
    def check(value: Any, handler: Callable[[Any], Any]) -> Any:
        try:
            value = handler(value)
        except pydantic.ValidationError:
            raise ValueError(message) from None
        if test is not None and not test(value):
            raise ValueError(message)
        return value
    return WrapValidator(check)


def choice(*options: str) -> Any:
    return Annotated[Literal[options], says("must be one of: " + ", ".join(options))]


def count(low: int, high: int) -> Any:
    return Annotated[int, Field(ge=low, le=high), says(f"must be an integer from {low} to {high}")]


def query_count(low: int, high: int = MAX_ID) -> Any:
    """An integer written in a query string: digits only, no sign, point or spaces."""
    def digits(value: Any) -> int:
        if not isinstance(value, str) or not re.fullmatch(r"\d{1,19}", value):
            raise ValueError("not digits")
        return int(value)
    return Annotated[int, Field(ge=low, le=high), BeforeValidator(digits),
                     says(f"must be an integer from {low} to {high}")]


def is_http_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def is_webhook_url(value: str) -> bool:
    """https, or plain http too where the server's settings allow it (WEBHOOK_ALLOW_HTTP, development)."""
    settings = current_app.config.get("SETTINGS") if has_app_context() else None
    try:
        scheme = urlsplit(value).scheme
    except ValueError:
        return False
    allowed = scheme == "https" or (scheme == "http" and getattr(settings, "webhook_allow_http", False))
    return allowed and is_http_url(value)


def realtime_choices(value: Any) -> dict[str, Any] | None:
    """The Realtime settings a body sets (services.realtime_settings), only the keys sent; null
    resets them all. The models offered depend on the server's settings."""
    if value is None:
        return None
    settings = current_app.config.get("SETTINGS") if has_app_context() else None
    default_model = getattr(settings, "openai_realtime_model", "gpt-realtime")
    extra_models = getattr(settings, "openai_realtime_extra_models", ())
    try:
        return realtime_settings.parse_choices(value, extra_models, default_model).given()
    except realtime_settings.RealtimeSettingsError as exc:
        raise ValueError(str(exc)) from None


def from_iso(value: Any) -> datetime:
    """An ISO-8601 time in UTC; one without an offset is taken as UTC, like everything stored."""
    if not isinstance(value, str):
        raise ValueError("not a string")
    return as_utc(datetime.fromisoformat(value)).astimezone(timezone.utc)


# C0 and C1 controls and DEL, but for new lines and tabs: a NUL breaks PostgreSQL text, the
# rest breaks logs, CSV exports and the prompt. Format marks (RLM, LRM) stay: Hebrew uses them.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def no_control_characters(value: str) -> str:
    if CONTROL_CHARACTERS.search(value):
        raise ValueError("must not contain control characters (new lines and tabs are fine)")
    return value


def text(max_length: int, min_length: int = 0) -> Any:
    """A string of bounded length without control characters: every text field of a body."""
    return Annotated[str, Field(min_length=min_length, max_length=max_length), AfterValidator(no_control_characters)]


def not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def distinct_numbers(value: Any) -> list[str]:
    if not isinstance(value, list):
        raise ValueError("must be a list of E.164 numbers")
    for index, item in enumerate(value):
        if not is_e164(item):
            raise ValueError(f"{json.dumps(item, ensure_ascii=False)} is not {E164_HINT}")
        if item in value[:index]:
            raise ValueError(f"{item} is listed twice")
    return list(value)


def _clock_minutes(value: Any, *, allow_midnight_end: bool = False) -> int | None:
    if allow_midnight_end and value == "24:00":
        return 24 * 60
    match = CLOCK.fullmatch(value) if isinstance(value, str) else None
    return int(match[1]) * 60 + int(match[2]) if match else None


def working_hours(value: Any) -> dict[str, list[list[str]]]:
    """{"sun": [["09:00", "13:00"], ["16:00", "19:00"]], ..., "eve": [["08:00", "12:00"]]}; a weekday
    left out is closed; "holiday" and "eve" give the hours of public holidays and their eves."""
    if not isinstance(value, dict):
        raise ValueError("must be an object with keys " + ", ".join(DAYS + SPECIAL_DAYS))
    unknown = [day for day in value if day not in DAYS + SPECIAL_DAYS]
    if unknown:
        raise ValueError(f"unknown day {unknown[0]!r}; days are " + ", ".join(DAYS + SPECIAL_DAYS))
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
    return {day: [list(pair) for pair in value[day]] for day in DAYS + SPECIAL_DAYS if day in value}


Phone = Annotated[str, says(f"must be {E164_HINT}", is_e164)]
TimeZone = Annotated[str, says("must be an IANA time zone such as Asia/Jerusalem", is_timezone)]
Flag = Annotated[bool, says("must be true or false")]
Voice = choice(*VOICES)
TransferMode = choice("warm", "cold")  # services/warm_transfer.py
Gender = choice(*GENDERS)
Day = choice(*DAYS, *SPECIAL_DAYS)
Status = choice(*sorted(KNOWN_STATUSES))
Id = count(1, MAX_ID)
ConcurrentCalls = count(1, 1000)
AppointmentMinutes = count(5, 480)
BusinessName = Annotated[text(200), AfterValidator(not_blank)]
PersonName = text(200)
Prompt = text(20_000)
Greeting = text(1_000)
Notes = text(5_000)
KeyName = text(100)
WebhookSecret = text(128, min_length=16)
WebhookUrl = Annotated[str, Field(max_length=500),
                       says("must be an https:// URL of at most 500 characters", is_webhook_url),
                       AfterValidator(no_control_characters)]
PhoneNumbers = Annotated[list[str], PlainValidator(distinct_numbers, json_schema_input_type=list[str])]
WorkingHours = Annotated[dict[str, list[list[str]]],
                         PlainValidator(working_hours, json_schema_input_type=dict[Day, list[tuple[str, str]]])]
RealtimeChoices = Annotated[dict[str, Any] | None,
                            PlainValidator(realtime_choices, json_schema_input_type=dict[str, Any] | None)]
QueryId = query_count(1)
Limit = query_count(1, 500)
Offset = query_count(0)
BargeInMode = choice(*BARGE_IN_MODES)
MAX_BACKCHANNEL_WORDS = 50


def backchannel_words(value: Any) -> list[str]:
    """A business's own backchannel words, each up to 40 characters (an entry of several words adds
    each of them: services.backchannel); stored trimmed."""
    shape = f"must be a list of at most {MAX_BACKCHANNEL_WORDS} words, each 1 to 40 characters"
    if not isinstance(value, list) or len(value) > MAX_BACKCHANNEL_WORDS:
        raise ValueError(shape)
    words = []
    for item in value:
        if (not isinstance(item, str) or len(item.strip()) > 40 or CONTROL_CHARACTERS.search(item)
                or not backchannel.normalise(item)):
            raise ValueError(f"{json.dumps(item, ensure_ascii=False)[:60]} is not a word; {shape}")
        words.append(item.strip())
    return words


BackchannelWords = Annotated[list[str], PlainValidator(backchannel_words, json_schema_input_type=list[str])]
IsoTime = Annotated[datetime, BeforeValidator(from_iso),
                    says("must be an ISO-8601 datetime such as 2025-01-31T08:00:00Z")]

# The default of a field a client may leave out. `given()` drops fields not sent, so what is
# stored (or the column's own default) stays; typed Any so each field keeps its own type.
LEFT_OUT: Any = None


# --- bodies -----------------------------------------------------------------------------

class Body(BaseModel):
    # JSON as sent: a string is not a number, "yes" is not true, a misspelt name is an error.
    model_config = ConfigDict(extra="forbid", strict=True)

    def given(self) -> dict[str, Any]:
        """The fields the client sent, validated."""
        return self.model_dump(exclude_unset=True)


class BusinessPatch(Body):
    """Any of a business's settings; only the fields given change."""

    name: BusinessName = LEFT_OUT
    phone_numbers: PhoneNumbers = LEFT_OUT
    voice: Voice = LEFT_OUT
    business_prompt: Prompt = LEFT_OUT
    greeting: Greeting = LEFT_OUT
    outbound_greeting: Greeting = LEFT_OUT
    transfer_number: Phone | None = LEFT_OUT
    transfer_on_shutdown: Flag = LEFT_OUT
    transfer_mode: TransferMode = LEFT_OUT
    timezone: TimeZone = LEFT_OUT
    working_hours: WorkingHours = LEFT_OUT
    max_concurrent_calls: ConcurrentCalls = LEFT_OUT
    use_customer_name: Flag = LEFT_OUT
    voicemail_message: Greeting = LEFT_OUT
    appointment_minutes: AppointmentMinutes = LEFT_OUT
    webhook_url: WebhookUrl | None = LEFT_OUT
    webhook_secret: WebhookSecret = LEFT_OUT
    record_calls: Flag = LEFT_OUT
    recording_notice: Flag = LEFT_OUT
    # Only the keys sent change (null resets one; `"realtime": null` resets all).
    realtime: RealtimeChoices = LEFT_OUT
    barge_in_mode: BargeInMode = LEFT_OUT
    backchannel_words: BackchannelWords = LEFT_OUT


class BusinessCreate(BusinessPatch):
    """A new business: a name, and any other setting (the rest take their defaults)."""

    name: BusinessName


class LeadCreate(Body):
    business_id: Id
    phone: Phone
    name: PersonName | None = LEFT_OUT
    gender: Gender | None = LEFT_OUT
    notes: Notes = LEFT_OUT


class ApiKeyCreate(Body):
    """A label to tell the business's keys apart ("crm", "console")."""

    name: KeyName = ""


class OutboundCallRequest(Body):
    business_id: Id
    to: Phone
    lead_id: Id | None = None


# --- list filters (query strings: every value arrives as text) --------------------------

class Page(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: Limit = 50
    offset: Offset = 0


class CallFilter(Page):
    business_id: QueryId | None = None
    status: Status | None = None
    since: IsoTime | None = None


class LeadFilter(Page):
    business_id: QueryId | None = None
    phone: Phone | None = None


class AppointmentFilter(Page):
    """On the appointment's start: from (inclusive) to (exclusive)."""

    business_id: QueryId | None = None
    phone: Phone | None = None
    from_: IsoTime | None = Field(None, alias="from")
    to: IsoTime | None = None


class AuditFilter(Page):
    business_id: QueryId | None = None
