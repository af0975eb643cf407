"""A call's Hebrew summary and structured extraction, through the OpenAI REST API.

The two requests go out together (two greenlets) and both must succeed; a failure
raises and the job is retried as a whole. A call in which the caller never spoke gets
fixed texts and no request at all.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Sequence

from openai import OpenAI

import prompts
from services.settings import Settings
from services.store import end_reasons
from services.store.end_reasons import EndReason
from services.post_call.parallel import in_parallel

URGENCY = ("low", "normal", "high")
SENTIMENT = ("positive", "neutral", "negative")
_NULLABLE_TEXT = {"type": ["string", "null"]}

# Structured Outputs (strict): every key required, no others; the meaning of each is in
# prompts/text/extraction.md.
EXTRACTION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "caller_name": _NULLABLE_TEXT,
        "phone": _NULLABLE_TEXT,
        "service_requested": _NULLABLE_TEXT,
        "city": _NULLABLE_TEXT,
        "preferred_datetime": _NULLABLE_TEXT,
        "appointment_booked": {"type": "boolean"},
        "follow_up_needed": {"type": "boolean"},
        "urgency": {"type": "string", "enum": list(URGENCY)},
        "sentiment": {"type": "string", "enum": list(SENTIMENT)},
        "language": _NULLABLE_TEXT,
        "outcome": {"type": "string"},
    },
    "required": ["caller_name", "phone", "service_requested", "city", "preferred_datetime", "appointment_booked",
                 "follow_up_needed", "urgency", "sentiment", "language", "outcome"],
}
SPEAKER_LABELS = {"caller": "Caller", "agent": "Assistant"}


class AnalysisError(Exception):
    """The model's answer is unusable (refused, empty, or not the schema)."""


@dataclass(frozen=True)
class Line:
    speaker: str  # caller | agent
    text: str


@dataclass(frozen=True)
class Analysis:
    summary: str
    extraction: dict[str, Any]
    model: str | None  # None: fixed texts, no model asked


def make_client(settings: Settings) -> OpenAI:
    # No SDK retries: the job's retry with backoff is the one retry policy, and it is on record.
    return OpenAI(api_key=settings.openai_api_key or "missing", base_url=settings.openai_base_url,
                  max_retries=0, timeout=settings.post_call.request_timeout_s)


def caller_spoke(lines: Sequence[Line]) -> bool:
    return any(line.speaker == "caller" and line.text.strip() for line in lines)


def transcript_text(lines: Sequence[Line]) -> str:
    return "\n".join(f"{SPEAKER_LABELS.get(line.speaker, line.speaker)}: {line.text.strip()}"
                     for line in lines if line.text.strip())


def analyze(client: OpenAI, model: str, business, lines: Sequence[Line], context: str) -> Analysis:
    """`context`: facts about the call the transcript lacks (its date, the caller ID)."""
    user = f"{context}\n\nTranscript:\n{transcript_text(lines)}"
    summary, extraction = in_parallel(
        lambda: _summary(client, model, prompts.build_summary_prompt(business), user),
        lambda: _extraction(client, model, prompts.build_extraction_prompt(business), user))
    return Analysis(summary=summary, extraction=extraction, model=model)


def no_conversation(end_reason: str | None, direction: str) -> Analysis:
    if end_reason == EndReason.CALLER_HANGUP:
        why = "caller_hangup"
    elif end_reason in end_reasons.FAILURES:  # our side failed, the caller did not leave
        why = "failure"
    else:
        why = "other"
    summary, outcome = prompts.no_conversation_texts(why)
    extraction = {
        "caller_name": None, "phone": None, "service_requested": None, "city": None, "preferred_datetime": None,
        "appointment_booked": False,
        # Someone rang the business and got nothing: worth calling back.
        "follow_up_needed": direction == "inbound",
        "urgency": "normal", "sentiment": "neutral", "language": None, "outcome": outcome,
    }
    return Analysis(summary=summary, extraction=extraction, model=None)


def _summary(client: OpenAI, model: str, system: str, user: str) -> str:
    completion = client.chat.completions.create(
        model=model, messages=[{"role": "system", "content": system}, {"role": "user", "content": user}])
    text = _content(completion)
    return " ".join(text.split())


def _extraction(client: OpenAI, model: str, system: str, user: str) -> dict[str, Any]:
    completion = client.chat.completions.create(
        model=model, messages=[{"role": "system", "content": system}, {"role": "user", "content": user}],
        response_format={"type": "json_schema",
                         "json_schema": {"name": "call_extraction", "strict": True, "schema": EXTRACTION_SCHEMA}})
    try:
        data = json.loads(_content(completion))
    except json.JSONDecodeError as exc:
        raise AnalysisError(f"extraction is not JSON: {exc}") from None
    return check_extraction(data)


def _content(completion) -> str:
    if not completion.choices:
        raise AnalysisError("no choices in the answer")
    message = completion.choices[0].message
    if getattr(message, "refusal", None):
        raise AnalysisError(f"the model refused: {message.refusal}")
    if not (message.content or "").strip():
        raise AnalysisError("empty answer")
    return message.content.strip()


def check_extraction(data: Any) -> dict[str, Any]:
    """The extraction as stored: the schema's keys checked, names that are placeholders dropped."""
    properties = EXTRACTION_SCHEMA["properties"]
    if not isinstance(data, dict) or set(data) != set(properties):
        raise AnalysisError("extraction does not have the schema's keys")
    for key, spec in properties.items():
        value = data[key]
        kinds = spec["type"] if isinstance(spec["type"], list) else [spec["type"]]
        ok = ((value is None and "null" in kinds) or (isinstance(value, str) and "string" in kinds)
              or (isinstance(value, bool) and "boolean" in kinds))
        if not ok or ("enum" in spec and value not in spec["enum"]):
            raise AnalysisError(f"extraction field {key} has a bad value")
    cleaned = {key: (value.strip() or None) if isinstance(value, str) else value for key, value in data.items()}
    cleaned["caller_name"] = prompts.usable_name(cleaned["caller_name"])
    cleaned["outcome"] = cleaned["outcome"] or ""
    return cleaned
