"""A business's Realtime settings: which model, how it listens and how it speaks.

Pure. A business stores only the settings it chose (the `realtime` JSON column, e.g.
{"model": "gpt-realtime-mini", "speed": 1.1}); everything else follows the server's defaults,
which are the values every call had before these settings existed, so a business that chose
nothing gets the same `session.update` and URL as ever (the model from OPENAI_REALTIME_MODEL).

The choices offered are read from the `openai` package's Realtime types (models, voices,
transcription models, noise reduction, semantic VAD's eagerness), and `parse_choices` ends by
building the session.update they give and validating it against those types.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Iterable, Literal, Mapping, Union, get_args, get_origin

import pydantic
from openai.types.realtime import AudioTranscription, RealtimeSessionCreateRequest
from openai.types.realtime.noise_reduction_type import NoiseReductionType
from openai.types.realtime.realtime_audio_config_output import Voice as SdkVoice
from openai.types.realtime.realtime_audio_input_turn_detection import SemanticVad as SdkSemanticVad
from pydantic import BaseModel, ConfigDict, Field

from services import realtime_protocol as rt


def _literals(annotation: Any) -> tuple[str, ...]:
    """Every string of the `Literal`s inside a type (through Optional and Union)."""
    if get_origin(annotation) is Literal:
        return tuple(a for a in get_args(annotation) if isinstance(a, str))
    return tuple(value for arg in get_args(annotation) for value in _literals(arg))


MODELS = _literals(RealtimeSessionCreateRequest.model_fields["model"].annotation)
VOICES = _literals(SdkVoice)
# Not offered: gpt-realtime-whisper needs turn detection off, and the diarizing model takes no
# prompt; a call needs VAD and always sends its transcription prompt.
TRANSCRIPTION_MODELS = tuple(m for m in _literals(AudioTranscription.model_fields["model"].annotation)
                             if m not in ("gpt-realtime-whisper", "gpt-4o-transcribe-diarize"))
NOISE_REDUCTION = ("off", *_literals(NoiseReductionType))
EAGERNESS = _literals(SdkSemanticVad.model_fields["eagerness"].annotation)
TURN_DETECTION = ("server_vad", "semantic_vad")
LANGUAGE = re.compile(r"[a-z]{2}")  # ISO-639-1, as the transcription takes it
MAX_OUTPUT_TOKENS = 4096  # the API's ceiling for a number; "inf" is the model's own maximum


class RealtimeSettingsError(ValueError):
    """Choices that do not fit: the message names each bad one ("speed: must be ...")."""


# --- the effective settings -------------------------------------------------------------

@dataclass(frozen=True)
class ServerVad:
    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = rt.VAD_SILENCE_MS
    type: str = "server_vad"


@dataclass(frozen=True)
class SemanticVad:
    eagerness: str = "auto"
    type: str = "semantic_vad"


@dataclass(frozen=True)
class RealtimeSettings:
    """What one call uses; the defaults are the server's, as every call had them before."""

    model: str
    turn_detection: ServerVad | SemanticVad = ServerVad()
    noise_reduction: str = "off"
    speed: float = 1.0
    max_output_tokens: int | str = "inf"
    transcription_model: str = "gpt-4o-transcribe"
    transcription_language: str = "he"

    def as_json(self) -> dict[str, Any]:
        """As the API shows it: the same shape a PATCH takes."""
        detection = self.turn_detection
        return {
            "model": self.model,
            "turn_detection": ({"type": "server_vad", "threshold": detection.threshold,
                                "prefix_padding_ms": detection.prefix_padding_ms,
                                "silence_duration_ms": detection.silence_duration_ms}
                               if isinstance(detection, ServerVad)
                               else {"type": "semantic_vad", "eagerness": detection.eagerness}),
            "noise_reduction": self.noise_reduction,
            "speed": self.speed,
            "max_output_tokens": self.max_output_tokens,
            "transcription": {"model": self.transcription_model, "language": self.transcription_language},
        }


def effective(chosen: Mapping[str, Any] | None, default_model: str) -> RealtimeSettings:
    """The settings a business's stored choices (already validated) give."""
    chosen = chosen or {}
    detection: ServerVad | SemanticVad = ServerVad()
    given = chosen.get("turn_detection")
    if given is not None:
        fields = {k: v for k, v in given.items() if k != "type"}
        detection = SemanticVad(**fields) if given.get("type") == "semantic_vad" else ServerVad(**fields)
    transcription = chosen.get("transcription") or {}
    defaults = RealtimeSettings(model=default_model)
    return RealtimeSettings(
        model=chosen.get("model") or default_model,
        turn_detection=detection,
        noise_reduction=chosen.get("noise_reduction", defaults.noise_reduction),
        speed=chosen.get("speed", defaults.speed),
        max_output_tokens=chosen.get("max_output_tokens", defaults.max_output_tokens),
        transcription_model=transcription.get("model", defaults.transcription_model),
        transcription_language=transcription.get("language", defaults.transcription_language),
    )


def of_business(chosen: Any, settings, log) -> RealtimeSettings:
    """A business's settings from its stored column, under the server's `Settings` (its default
    model and the models it allows). Stored choices were validated when saved; ones that no
    longer fit (a model the operator has since withdrawn, a column edited by hand) are logged
    and the server's defaults used instead."""
    if not chosen:
        return effective(None, settings.openai_realtime_model)
    try:
        choices = parse_choices(chosen, settings.openai_realtime_extra_models, settings.openai_realtime_model)
    except RealtimeSettingsError as exc:
        log.warning("stored Realtime settings no longer valid: using the server's defaults",
                    extra={"error": str(exc)})
        return effective(None, settings.openai_realtime_model)
    return effective(choices.given(), settings.openai_realtime_model)


# --- the wire ---------------------------------------------------------------------------

def session_config(settings: RealtimeSettings, *, instructions: str, voice: str, transcription_prompt: str,
                   tools=()) -> rt.SessionConfig:
    """The call's session.update. What equals the API's own default (noise reduction off, speed
    1.0, no output cap) is left out, so that a business without choices sends what it always did."""
    detection = settings.turn_detection
    vad = ({"vad_threshold": detection.threshold, "vad_prefix_padding_ms": detection.prefix_padding_ms,
            "vad_silence_ms": detection.silence_duration_ms} if isinstance(detection, ServerVad)
           else {"turn_detection": "semantic_vad", "vad_eagerness": detection.eagerness})
    return rt.SessionConfig(
        instructions=instructions, voice=voice, transcription_prompt=transcription_prompt, tools=tuple(tools),
        transcription_model=settings.transcription_model, transcription_language=settings.transcription_language,
        noise_reduction=None if settings.noise_reduction == "off" else settings.noise_reduction,
        speed=None if settings.speed == 1.0 else settings.speed,
        max_output_tokens=None if settings.max_output_tokens == "inf" else settings.max_output_tokens,
        **vad)


# --- what a client may choose -----------------------------------------------------------

def _says(message: str):
    def check(value: Any, handler):
        try:
            return handler(value)
        except pydantic.ValidationError:
            raise ValueError(message) from None
    return pydantic.WrapValidator(check)


def _one_of(options: tuple[str, ...]) -> Any:
    return Annotated[Literal[options], _says("must be one of: " + ", ".join(options))]


def _number(low: float, high: float) -> Any:
    return Annotated[float, Field(ge=low, le=high), _says(f"must be a number from {low} to {high}")]


def _whole(low: int, high: int) -> Any:
    return Annotated[int, Field(ge=low, le=high), _says(f"must be an integer from {low} to {high}")]


class _Choice(BaseModel):
    # As sent: 1 is a number but "1" and true are not; a misspelt name is an error.
    model_config = ConfigDict(extra="forbid", strict=True)


class ServerVadChoice(_Choice):
    type: Literal["server_vad"]
    threshold: _number(0.0, 1.0) = ServerVad.threshold
    prefix_padding_ms: _whole(0, 2000) = ServerVad.prefix_padding_ms
    silence_duration_ms: _whole(100, 5000) = ServerVad.silence_duration_ms


class SemanticVadChoice(_Choice):
    type: Literal["semantic_vad"]
    eagerness: _one_of(EAGERNESS) = SemanticVad.eagerness


def _language(value: str) -> str:
    if not LANGUAGE.fullmatch(value):
        raise ValueError("not ISO-639-1")
    return value


class TranscriptionChoice(_Choice):
    model: _one_of(TRANSCRIPTION_MODELS) = RealtimeSettings.transcription_model
    language: Annotated[str, pydantic.AfterValidator(_language),
                        _says("must be a two-letter ISO-639-1 code such as he")] = RealtimeSettings.transcription_language


TurnDetectionChoice = Annotated[Union[ServerVadChoice, SemanticVadChoice], Field(discriminator="type")]
OutputTokens = Union[_whole(1, MAX_OUTPUT_TOKENS), Literal["inf"]]


class RealtimeChoices(_Choice):
    """A business's choices; a key left out (or null) follows the server's default."""

    model: str | None = None
    turn_detection: TurnDetectionChoice | None = None
    noise_reduction: _one_of(NOISE_REDUCTION) | None = None
    speed: _number(0.25, 1.5) | None = None
    max_output_tokens: OutputTokens | None = None
    transcription: TranscriptionChoice | None = None

    def given(self) -> dict[str, Any]:
        """The keys sent, sub-objects with only their keys sent (their others follow the defaults)."""
        return self.model_dump(exclude_unset=True)


def parse_choices(data: Any, allowed_models: Iterable[str], default_model: str) -> RealtimeChoices:
    """`data` as choices, or RealtimeSettingsError naming every bad one. A model must be one the
    openai package knows, the server's default, or one the operator allowed
    (OPENAI_REALTIME_EXTRA_MODELS); the result must make a session.update the package accepts."""
    if not isinstance(data, dict):
        raise RealtimeSettingsError("must be an object with any of: " + ", ".join(RealtimeChoices.model_fields))
    try:
        choices = RealtimeChoices.model_validate(data)
    except pydantic.ValidationError as exc:
        raise RealtimeSettingsError(_messages(exc)) from None
    models = known_models(allowed_models, default_model)
    if choices.model is not None and choices.model not in models:
        raise RealtimeSettingsError(f"model: {choices.model!r} is not a Realtime model this server offers "
                                    f"({', '.join(models)}); the operator may allow more with "
                                    "OPENAI_REALTIME_EXTRA_MODELS")
    settings = effective(choices.given(), default_model)
    try:
        rt.session_update(session_config(settings, instructions="x", voice="alloy", transcription_prompt=""))
    except rt.ProtocolError as exc:
        raise RealtimeSettingsError(f"not a session the openai package accepts: {exc}") from None
    return choices


def known_models(allowed_models: Iterable[str], default_model: str) -> tuple[str, ...]:
    """The models a business may choose, the openai package's first."""
    extra = [m for m in (default_model, *allowed_models) if m not in MODELS]
    return MODELS + tuple(dict.fromkeys(extra))


def merge(stored: Mapping[str, Any] | None, given: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A PATCH's choices over the stored ones: a key sent replaces it whole, null drops it (back
    to the default), and `given` None drops all. None when nothing is left."""
    if given is None:
        return None
    merged = {**(stored or {}), **given}
    merged = {key: value for key, value in merged.items() if value is not None}
    return merged or None


_WORDING = {
    "extra_forbidden": "unknown setting",
    "missing": "required",
    "union_tag_invalid": "type must be one of: " + ", ".join(TURN_DETECTION),
    "union_tag_not_found": "needs a type: " + ", ".join(TURN_DETECTION),
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "string_type": "must be a string",
}


def _messages(exc: pydantic.ValidationError) -> str:
    """One "path: problem" per bad setting, in the order given."""
    found: dict[str, str] = {}
    for error in exc.errors(include_url=False):
        loc = [str(part) for part in error["loc"]
               if str(part) not in ("server_vad", "semantic_vad", "int", "literal['inf']",
                                    "function-wrap[check()]")]
        name = loc[0] if loc else "realtime"
        if name == "max_output_tokens":
            found.setdefault(name, f"must be an integer from 1 to {MAX_OUTPUT_TOKENS}, or \"inf\"")
            continue
        path = ".".join(loc) or "realtime"
        if error["type"] == "value_error":
            message = str(error["ctx"]["error"])
        else:
            message = _WORDING.get(error["type"], error["msg"])
        found.setdefault(path, message)
    return "; ".join(f"{path}: {message}" for path, message in found.items())
