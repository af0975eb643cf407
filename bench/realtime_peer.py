"""What the GA Realtime API answers, built once for the two fakes that play it.

The benchmark's lean fake (`bench.lean_realtime`) and the tests' full one
(`tests/fakes/realtime_server.py`) send the same shapes: the session the API reports,
its response objects and items, transcription events and token usage, and the VAD
defaults it starts with.
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


def response_object(session: dict, run, status: str, output: list, usage: dict | None = None) -> dict:
    """A GA `response` object for `run` (anything with `.id`), in the session's audio format."""
    out = session["audio"]["output"]
    obj = {"object": "realtime.response", "id": run.id, "status": status, "status_details": None,
           "output": output, "conversation_id": "conv_" + session["id"][5:], "output_modalities": ["audio"],
           "max_output_tokens": "inf", "audio": {"output": {"format": out["format"], "voice": out.get("voice")}},
           "usage": usage, "metadata": None}
    if status == "cancelled":
        obj["status_details"] = {"type": "cancelled", "reason": "client_cancelled"}
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
