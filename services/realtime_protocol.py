"""The OpenAI Realtime API (GA) wire format: server events in, client events out.

Pure: no sockets, no clocks. `parse_server_event` turns a JSON text into one of the
typed events below (`Ignored` for types the call does not act on). The builders return
JSON text; every one but the audio append is validated against the `openai` package's
client event types, strictly (keys the types do not define are rejected).
"""
from __future__ import annotations

import binascii
import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import pydantic
from openai import BaseModel as OpenAIModel
from openai.types.realtime import RealtimeClientEvent


class ProtocolError(ValueError):
    """A server event we cannot read, or a client event the API would reject."""


# --- server events -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SessionUpdated:
    pass


@dataclass(frozen=True, slots=True)
class ResponseCreated:
    response_id: str


@dataclass(frozen=True, slots=True)
class OutputItemAdded:
    response_id: str
    item_id: str
    item_type: str


@dataclass(frozen=True, slots=True)
class AudioDelta:
    response_id: str
    item_id: str
    audio: bytes  # μ-law 8 kHz


@dataclass(frozen=True, slots=True)
class AudioDone:
    response_id: str
    item_id: str


@dataclass(frozen=True, slots=True)
class TranscriptDelta:
    item_id: str
    delta: str


@dataclass(frozen=True, slots=True)
class TranscriptDone:
    item_id: str
    transcript: str


@dataclass(frozen=True, slots=True)
class Usage:
    input_text: int = 0
    input_audio: int = 0
    input_cached: int = 0
    output_text: int = 0
    output_audio: int = 0

    @property
    def total(self) -> int:
        return self.input_text + self.input_audio + self.output_text + self.output_audio


@dataclass(frozen=True, slots=True)
class FunctionCall:
    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ResponseDone:
    response_id: str
    status: str  # completed | cancelled | failed | incomplete
    usage: Usage | None = None
    function_calls: tuple[FunctionCall, ...] = ()
    status_reason: str | None = None


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    item_id: str


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    item_id: str


@dataclass(frozen=True, slots=True)
class InputCommitted:
    item_id: str


@dataclass(frozen=True, slots=True)
class InputTranscript:
    item_id: str
    transcript: str


@dataclass(frozen=True, slots=True)
class InputTranscriptFailed:
    item_id: str
    message: str


@dataclass(frozen=True, slots=True)
class ServerError:
    code: str
    message: str
    fatal: bool = False  # the session is over on the API's side: reconnect


# Errors after which the API's session no longer works: its own failure, or the session's end.
FATAL_ERROR_TYPES = frozenset({"server_error"})
FATAL_ERROR_CODES = frozenset({"session_expired", "internal_error"})


@dataclass(frozen=True, slots=True)
class Ignored:
    type: str


ServerEvent = (
    SessionUpdated | ResponseCreated | OutputItemAdded | AudioDelta | AudioDone
    | TranscriptDelta | TranscriptDone | ResponseDone | SpeechStarted | SpeechStopped | InputCommitted
    | InputTranscript | InputTranscriptFailed | ServerError | Ignored
)


def _object(parent: Mapping[str, Any], key: str, required: bool = True) -> dict[str, Any]:
    """`parent[key]`, a JSON object; an optional one left out (or null) reads as {}."""
    value = parent[key] if required else parent.get(key) or {}
    if type(value) is not dict:
        raise TypeError(f"{key} is not an object")
    return value


def _text(parent: Mapping[str, Any], key: str, default: str | None = None) -> str:
    """`parent[key]`, a string; with a `default`, one left out (or null, or empty) reads as it."""
    value = parent[key] if default is None else parent.get(key) or default
    if type(value) is not str:
        raise TypeError(f"{key} is not a string")
    return value


def _count(parent: Mapping[str, Any], key: str) -> int:
    value = parent.get(key) or 0
    if type(value) is not int:
        raise TypeError(f"{key} is not an integer")
    return value


def _usage(raw: Any) -> Usage | None:
    if not raw:
        return None
    if type(raw) is not dict:
        raise TypeError("usage is not an object")
    inp = _object(raw, "input_token_details", required=False)
    out = _object(raw, "output_token_details", required=False)
    return Usage(
        input_text=_count(inp, "text_tokens"),
        input_audio=_count(inp, "audio_tokens"),
        input_cached=_count(inp, "cached_tokens"),
        output_text=_count(out, "text_tokens"),
        output_audio=_count(out, "audio_tokens"),
    )


def _function_calls(output: Any) -> tuple[FunctionCall, ...]:
    if not output:
        return ()
    if type(output) is not list:
        raise TypeError("output is not a list")
    calls = []
    for item in output:
        if type(item) is not dict:
            raise TypeError("output item is not an object")
        if item.get("type") == "function_call":
            calls.append(FunctionCall(call_id=_text(item, "call_id"), name=_text(item, "name"),
                                      arguments=_text(item, "arguments", "{}")))
    return tuple(calls)


def _response_done(e: Mapping[str, Any]) -> ResponseDone:
    response = _object(e, "response")
    details = _object(response, "status_details", required=False)
    reason = details.get("reason") or _object(details, "error", required=False).get("message")
    return ResponseDone(response_id=_text(response, "id", ""), status=_text(response, "status", "completed"),
                        usage=_usage(response.get("usage")), function_calls=_function_calls(response.get("output")),
                        status_reason=reason if type(reason) is str else None)


def _error(e: Mapping[str, Any]) -> ServerError:
    err = _object(e, "error", required=False)
    code, kind = err.get("code") or err.get("type") or "error", err.get("type")
    if type(code) is not str or (kind is not None and type(kind) is not str):
        raise TypeError("error.code or error.type is not a string")
    fatal = kind in FATAL_ERROR_TYPES or code in FATAL_ERROR_CODES
    return ServerError(code=code, message=_text(err, "message", ""), fatal=fatal)


# Only the types the call acts on; the rest (session.created, conversation.item.truncated,
# rate_limits.updated, ...) become `Ignored` without being read further. Every field is
# checked for its JSON type: a list where a string belongs is a ProtocolError here, not a
# crash later in the call.
_PARSERS = {
    "session.updated": lambda e: SessionUpdated(),
    "response.created": lambda e: ResponseCreated(response_id=_text(_object(e, "response"), "id")),
    "response.output_item.added": lambda e: OutputItemAdded(
        response_id=_text(e, "response_id"), item_id=_text(_object(e, "item"), "id"),
        item_type=_text(_object(e, "item"), "type", "")),
    "response.output_audio.done": lambda e: AudioDone(response_id=_text(e, "response_id"),
                                                      item_id=_text(e, "item_id")),
    "response.output_audio_transcript.delta": lambda e: TranscriptDelta(item_id=_text(e, "item_id"),
                                                                        delta=_text(e, "delta")),
    "response.output_audio_transcript.done": lambda e: TranscriptDone(item_id=_text(e, "item_id"),
                                                                      transcript=_text(e, "transcript")),
    "response.done": _response_done,
    "input_audio_buffer.speech_started": lambda e: SpeechStarted(item_id=_text(e, "item_id", "")),
    "input_audio_buffer.speech_stopped": lambda e: SpeechStopped(item_id=_text(e, "item_id", "")),
    "input_audio_buffer.committed": lambda e: InputCommitted(item_id=_text(e, "item_id", "")),
    "conversation.item.input_audio_transcription.completed": lambda e: InputTranscript(
        item_id=_text(e, "item_id"), transcript=_text(e, "transcript", "")),
    "conversation.item.input_audio_transcription.failed": lambda e: InputTranscriptFailed(
        item_id=_text(e, "item_id"), message=_text(_object(e, "error", required=False), "message", "")),
    "error": _error,
}


def parse_server_event(text: str | bytes) -> ServerEvent:
    try:
        event = json.loads(text)
        kind = event["type"]
    except (ValueError, KeyError, TypeError, RecursionError) as exc:  # RecursionError: absurd nesting
        raise ProtocolError(f"unreadable server event: {type(exc).__name__}") from None
    if type(event) is not dict or type(kind) is not str:
        raise ProtocolError("server event without a string type")
    if kind == "response.output_audio.delta":  # the hot one: by far the most frequent
        try:
            response_id, item_id, delta = event["response_id"], event["item_id"], event["delta"]
            if type(response_id) is not str or type(item_id) is not str or type(delta) is not str:
                raise TypeError("response_id, item_id or delta is not a string")
            return AudioDelta(response_id=response_id, item_id=item_id, audio=binascii.a2b_base64(delta))
        except (KeyError, TypeError, ValueError) as exc:  # ValueError: bad base64 or a non-ASCII character
            raise ProtocolError(f"bad audio delta: {exc}") from None
    parser = _PARSERS.get(kind)
    if parser is None:
        return Ignored(type=kind)
    try:
        return parser(event)
    except (KeyError, TypeError) as exc:
        raise ProtocolError(f"bad {kind} event: missing or malformed {exc}") from None


# --- client events -----------------------------------------------------------------

_CLIENT_EVENT = pydantic.TypeAdapter(RealtimeClientEvent)


def validate_client_event(event: Mapping[str, Any] | str | bytes) -> None:
    """Raise ProtocolError unless the event is a client event the GA API defines, exactly.

    The SDK's models keep unknown keys instead of rejecting them, so after validation
    every model in the tree is checked for keys its type does not define.
    """
    if isinstance(event, (str, bytes)):
        try:
            event = json.loads(event)
        except ValueError as exc:
            raise ProtocolError(f"client event is not JSON: {exc}") from None
    try:
        model = _CLIENT_EVENT.validate_python(event)
    except pydantic.ValidationError as exc:
        raise ProtocolError(f"invalid client event: {exc}") from None
    unknown = _unknown_keys(model, event.get("type", "?") if isinstance(event, Mapping) else "?")
    if unknown:
        raise ProtocolError(f"client event has keys its type does not define: {', '.join(unknown)}")


def _unknown_keys(value: Any, path: str) -> list[str]:
    found: list[str] = []
    if isinstance(value, OpenAIModel):
        found.extend(f"{path}.{key}" for key in (value.model_extra or {}))
        for name in type(value).model_fields:
            found.extend(_unknown_keys(getattr(value, name), f"{path}.{name}"))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            found.extend(_unknown_keys(item, f"{path}[{i}]"))
    return found


def _encode(event: dict[str, Any]) -> str:
    validate_client_event(event)
    return json.dumps(event, ensure_ascii=False, separators=(",", ":"))


VAD_SILENCE_MS = 400  # server VAD reports speech_stopped this long after speech ends


@dataclass(frozen=True)
class FunctionTool:
    """A function the model may call; `parameters` is its JSON Schema."""

    name: str
    description: str
    parameters: Mapping[str, Any]


@dataclass(frozen=True)
class SessionConfig:
    """What one call's `session.update` says."""

    instructions: str
    voice: str
    transcription_prompt: str
    vad_threshold: float = 0.5
    vad_silence_ms: int = VAD_SILENCE_MS
    vad_prefix_padding_ms: int = 300
    turn_detection: str = "server_vad"  # or "semantic_vad", which takes `vad_eagerness` instead
    vad_eagerness: str = "auto"
    transcription_model: str = "gpt-4o-transcribe"
    transcription_language: str = "he"
    # None: not sent, the API's own default (noise reduction off, speed 1.0, no output cap).
    noise_reduction: str | None = None
    speed: float | None = None
    max_output_tokens: int | str | None = None
    tools: Sequence[FunctionTool] = field(default_factory=tuple)


def session_update(config: SessionConfig) -> str:
    """μ-law in and out; VAD reports speech but never starts or cancels a response itself:
    the call's response gate and barge-in logic decide (greeting protection needs that)."""
    if config.turn_detection == "semantic_vad":
        turn_detection: dict[str, Any] = {"type": "semantic_vad", "eagerness": config.vad_eagerness}
    else:
        turn_detection = {"type": "server_vad", "threshold": config.vad_threshold,
                          "silence_duration_ms": config.vad_silence_ms,
                          "prefix_padding_ms": config.vad_prefix_padding_ms}
    turn_detection.update(create_response=False, interrupt_response=False)
    audio_in: dict[str, Any] = {
        "format": {"type": "audio/pcmu"},
        "transcription": {"model": config.transcription_model, "language": config.transcription_language,
                          "prompt": config.transcription_prompt},
        "turn_detection": turn_detection,
    }
    if config.noise_reduction is not None:
        audio_in["noise_reduction"] = {"type": config.noise_reduction}
    audio_out: dict[str, Any] = {"format": {"type": "audio/pcmu"}, "voice": config.voice}
    if config.speed is not None:
        audio_out["speed"] = config.speed
    session: dict[str, Any] = {
        "type": "realtime",
        "instructions": config.instructions,
        "output_modalities": ["audio"],
        "audio": {"input": audio_in, "output": audio_out},
    }
    if config.max_output_tokens is not None:
        session["max_output_tokens"] = config.max_output_tokens
    if config.tools:
        session["tools"] = [{"type": "function", "name": tool.name, "description": tool.description,
                             "parameters": dict(tool.parameters)} for tool in config.tools]
        session["tool_choice"] = "auto"
    return _encode({"type": "session.update", "session": session})


def audio_append(payload_b64: str) -> str:
    """Caller audio, already base64 μ-law from Twilio: forwarded without decoding.

    Built by hand (it runs 50 times a second per call); its shape is validated in tests.
    """
    return '{"type":"input_audio_buffer.append","audio":"' + payload_b64 + '"}'


def response_create(instructions: str | None = None) -> str:
    event: dict[str, Any] = {"type": "response.create"}
    if instructions:
        event["response"] = {"instructions": instructions}
    return _encode(event)


def response_cancel(response_id: str | None = None) -> str:
    event: dict[str, Any] = {"type": "response.cancel"}
    if response_id:
        event["response_id"] = response_id
    return _encode(event)


def item_truncate(item_id: str, audio_end_ms: int) -> str:
    return _encode({"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0,
                    "audio_end_ms": max(0, int(audio_end_ms))})


def system_message(text: str) -> str:
    return _encode({"type": "conversation.item.create",
                    "item": {"type": "message", "role": "system", "content": [{"type": "input_text", "text": text}]}})


def user_text_message(text: str) -> str:
    return _encode({"type": "conversation.item.create",
                    "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}})


def assistant_text_message(text: str) -> str:
    """What the agent said earlier, replayed into a new session as text."""
    return _encode({"type": "conversation.item.create",
                    "item": {"type": "message", "role": "assistant",
                             "content": [{"type": "output_text", "text": text}]}})


def function_call_output(call_id: str, output: str) -> str:
    return _encode({"type": "conversation.item.create",
                    "item": {"type": "function_call_output", "call_id": call_id, "output": output}})
