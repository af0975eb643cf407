"""What the GA Realtime API answers, built once for the two fakes that play it.

The benchmark's lean fake (`bench.lean_realtime`) and the tests' full one
(`tests/fakes/realtime_server.py`) send the same shapes: the session the API reports,
its response objects (and how each way of ending is detailed) and items, transcription
events (deltas, completed, failed), rate limits and token usage, and the VAD defaults
it starts with, with the μ-law level its threshold asks for.
"""
from __future__ import annotations

import copy
import re
import time
import uuid
from typing import Mapping

PATH = "/v1/realtime"
SILENT_BYTES = b"\xff\x7f"  # μ-law zero, both signs
DEFAULT_SILENCE_MS = 400
DEFAULT_PREFIX_PADDING_MS = 300
DEFAULT_VAD_THRESHOLD = 0.5


def _mulaw_magnitude(byte: int) -> int:
    """|linear sample| of a G.711 μ-law byte (0..32124)."""
    byte = ~byte & 0xFF
    exponent, mantissa = (byte >> 4) & 0x07, byte & 0x0F
    return (((mantissa << 3) + 0x84) << exponent) - 0x84


MULAW_MAGNITUDE = tuple(_mulaw_magnitude(b) for b in range(256))


def mulaw_level(audio: bytes) -> float:
    """Mean |sample| of μ-law audio, decoded to 16-bit linear (0 for digital silence)."""
    if not audio or not audio.strip(SILENT_BYTES):
        return 0.0
    return sum(map(MULAW_MAGNITUDE.__getitem__, audio)) / len(audio)


def vad_level(threshold: float | None) -> float:
    """The decoded level a VAD threshold (0..1, as the API's) asks speech to reach: 0.5 is
    -40 dBFS, each 0.1 more 4 dB louder. Line hiss (-50 dBFS and below) stays silence."""
    if not isinstance(threshold, (int, float)):
        threshold = DEFAULT_VAD_THRESHOLD
    return 32768 * 10 ** ((-60 + 40 * min(1.0, max(0.0, threshold))) / 20)


def agent_audio_byte(response_index: int) -> int:
    """The constant μ-law byte of a connection's n-th response (0-based): tells responses apart."""
    return 0x20 + response_index % 64


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:22]}"


# Tagged unions: the client's object replaces the old one whole (a pcmu format has no rate).
_REPLACED_WHOLE = {"format", "turn_detection", "transcription", "noise_reduction", "tracing", "prompt"}


def merge_session(base: dict, update: Mapping) -> dict:
    """The session after a `session.update`: objects merged key by key, tagged unions replaced."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict) and key not in _REPLACED_WHOLE:
            merged[key] = merge_session(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def default_session(model: str) -> dict:
    """The session the real API reports in session.created (GA shape)."""
    return {
        "type": "realtime",
        "object": "realtime.session",
        "id": new_id("sess"),
        "model": model,
        "output_modalities": ["audio"],
        "instructions": "",
        "tools": [],
        "tool_choice": "auto",
        "max_output_tokens": "inf",
        "tracing": None,
        "prompt": None,
        "expires_at": int(time.time()) + 3600,
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "transcription": None,
                "noise_reduction": None,
                "turn_detection": {"type": "server_vad", "threshold": 0.5,
                                   "prefix_padding_ms": DEFAULT_PREFIX_PADDING_MS,
                                   "silence_duration_ms": DEFAULT_SILENCE_MS, "idle_timeout_ms": None,
                                   "create_response": True, "interrupt_response": True},
            },
            "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "marin", "speed": 1.0},
        },
        "include": None,
    }


def transcribes(session: dict) -> bool:
    """The real API transcribes the caller only when the session asks for it."""
    return ((session.get("audio") or {}).get("input") or {}).get("transcription") is not None


def text_pieces(text: str, n: int) -> list[str]:
    """Split text into n transcript deltas whose concatenation is the text."""
    words = re.findall(r"\s*\S+\s*", text) or [text]
    pieces = [""] * max(1, n)
    for i, word in enumerate(words):
        pieces[i * len(pieces) // len(words)] += word
    return pieces


SERVER_ERROR_MESSAGE = ("The server had an error while processing your request. Sorry about that! You can retry "
                        "your request, or contact us through our help center at help.openai.com if the error persists.")
SESSION_EXPIRED_MESSAGE = "Your session hit the maximum duration of 60 minutes."


def status_details(status: str, reason: str | None = None, error: Mapping | None = None) -> dict | None:
    """A response's `status_details` as the API reports each way of ending."""
    if status == "cancelled":
        return {"type": "cancelled", "reason": reason or "client_cancelled"}
    if status == "incomplete":
        return {"type": "incomplete", "reason": reason or "max_output_tokens"}
    if status == "failed":
        return {"type": "failed", "error": dict(error or {"type": "server_error", "code": None,
                                                          "message": SERVER_ERROR_MESSAGE})}
    return None


def response_object(session: dict, run, status: str, output: list, usage: dict | None = None,
                    details: dict | None = None) -> dict:
    """A GA `response` object for `run` (anything with `.id`), in the session's audio format.
    `details`: its `status_details` (by default those `status_details` gives for the status)."""
    out = session["audio"]["output"]
    obj = {"object": "realtime.response", "id": run.id, "status": status,
           "status_details": details if details is not None else status_details(status),
           "output": output, "conversation_id": "conv_" + session["id"][5:], "output_modalities": ["audio"],
           "max_output_tokens": "inf", "audio": {"output": {"format": out["format"], "voice": out.get("voice")}},
           "usage": usage, "metadata": None}
    return obj


def message_item(run, status: str, with_content: bool) -> dict:
    """The assistant message item of `run` (anything with `.item_id` and `.transcript_sent`)."""
    content = [{"type": "output_audio", "transcript": run.transcript_sent}] if with_content else []
    return {"id": run.item_id, "object": "realtime.item", "type": "message", "role": "assistant",
            "status": status, "content": content}


def caller_item(item_id: str) -> dict:
    """The user message item a commit of the caller's audio makes."""
    return {"id": item_id, "object": "realtime.item", "type": "message", "role": "user", "status": "completed",
            "content": [{"type": "input_audio", "transcript": None}]}


def transcription_completed(item_id: str, text: str) -> dict:
    tokens = max(1, len(text) // 3)
    return {"type": "conversation.item.input_audio_transcription.completed", "item_id": item_id,
            "content_index": 0, "transcript": text,
            "usage": {"type": "tokens", "total_tokens": 20 + tokens, "input_tokens": 20, "output_tokens": tokens,
                      "input_token_details": {"text_tokens": 0, "audio_tokens": 20}}}


def transcription_delta(item_id: str, delta: str) -> dict:
    return {"type": "conversation.item.input_audio_transcription.delta", "item_id": item_id, "content_index": 0,
            "delta": delta}


def transcription_failed(item_id: str, code: str = "audio_unintelligible",
                         message: str = "The audio could not be transcribed.") -> dict:
    return {"type": "conversation.item.input_audio_transcription.failed", "item_id": item_id, "content_index": 0,
            "error": {"type": "transcription_error", "code": code, "message": message, "param": None}}


def rate_limits_updated(tokens_reserved: int = 4096) -> dict:
    """What the API sends after each `response.created`: the limits with the response's reservation."""
    return {"type": "rate_limits.updated", "rate_limits": [
        {"name": "requests", "limit": 20000, "remaining": 19999, "reset_seconds": 0.003},
        {"name": "tokens", "limit": 4000000, "remaining": 4000000 - tokens_reserved, "reset_seconds": 0.06}]}


def token_usage(instructions: str, input_ms: float, cached: bool, audio_ms_out: float, text_out: str) -> dict:
    """Plausible GA-shaped token counts: audio ~ 1 token per 50 ms, text ~ 1 per 3 characters.
    `cached`: half the instructions count as cached (a response after the first)."""
    in_text = 50 + len(instructions) // 3
    in_audio = int(input_ms // 100)
    cached_tokens = in_text // 2 if cached else 0
    out_audio = int(audio_ms_out // 50)
    out_text = max(1, len(text_out) // 3)
    return {"total_tokens": in_text + in_audio + out_audio + out_text, "input_tokens": in_text + in_audio,
            "output_tokens": out_audio + out_text,
            "input_token_details": {"text_tokens": in_text, "audio_tokens": in_audio, "cached_tokens": cached_tokens},
            "output_token_details": {"text_tokens": out_text, "audio_tokens": out_audio}}
