"""The call's recording: started through Twilio's REST API when the stream starts, stored
from Twilio's status callback, transcribed per channel after the call.

Twilio records the call's two legs on two channels: the first is the person on the phone
(the caller, or the person we called), the second is what our stream played (the agent).
Each channel is transcribed on its own, in Hebrew, with segment timestamps; the segments
are then put back in time order. Without timestamps the two channels cannot be
interleaved, and the job falls back to the live turns.
"""
from __future__ import annotations

import io
import logging
import wave
from array import array
from typing import Any

from openai import OpenAI
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

import prompts
from services.store.models import Call
from services.settings import Settings
from services.post_call.context import JobContext
from services.post_call.parallel import in_parallel
from services.twilio_rest import TwilioNotConfigured, TwilioRest, TwilioRestError


CHANNEL_SPEAKERS = ("caller", "agent")
# Twilio's recording statuses before it says how the recording ended; "starting" is ours,
# set when we asked for it.
IN_FLIGHT = frozenset({"starting", "in-progress", "paused", "stopped", "processing"})
# One channel, 8 kHz 16-bit, must stay under the API's 25 MB upload limit (about 26 minutes).
MAX_SECONDS = 20 * 60
DOWNLOAD_TIMEOUT_S = 30.0


class RecordingUnusable(Exception):
    """The recording cannot give a transcript (format, length, no timestamps)."""


def start(settings: Settings, call_sid: str, record_calls: bool, log: logging.LoggerAdapter) -> str | None:
    """Ask Twilio to record the call's two channels; the recording's sid, or None. Runs in a
    greenlet of its own: the REST request must not hold up the call, and a failure only costs
    the recording. The caller stores the sid (`remember`): a call's, with its other writes."""
    if not record_calls:
        return None
    try:
        return _start(settings, call_sid, log)
    except Exception:
        log.exception("call not recorded")
        return None


def _start(settings: Settings, call_sid: str, log: logging.LoggerAdapter) -> str | None:
    try:
        twilio = TwilioRest(settings)
    except TwilioNotConfigured:
        log.debug("call not recorded: no Twilio credentials")
        return None
    if not settings.public_base_url:
        log.warning("call not recorded: PUBLIC_BASE_URL is not set, so Twilio has nowhere to report the recording")
        return None
    try:
        sid = twilio.start_recording(call_sid, f"{settings.public_base_url}/webhook/recording_status")
    except TwilioRestError as exc:
        log.warning("call not recorded: Twilio refused", extra={"status": exc.status, "error": str(exc)})
        return None
    log.info("recording started", extra={"recording_sid": sid})
    return sid


def remember(session: Session, call_sid: str, recording_sid: str) -> None:
    """The started recording on the call's row, in one UPDATE: Twilio's status callback may have
    come first, and its word stands."""
    session.connection().execute(
        update(Call.__table__).where(Call.call_sid == call_sid)
        .values(recording_sid=func.coalesce(func.nullif(Call.recording_sid, ""), recording_sid),
                recording_status=func.coalesce(func.nullif(Call.recording_status, ""), "in-progress")))


def store_status(session: Session, call_sid: str, *, recording_sid: str, status: str, url: str,
                 duration: str) -> Call | None:
    """What Twilio's recording status callback says, on the call's row (None: unknown call)."""
    call = session.scalar(select(Call).where(Call.call_sid == call_sid))
    if call is None:
        return None
    call.recording_sid = recording_sid or call.recording_sid
    call.recording_status = status
    call.recording_url = url or call.recording_url
    if duration.isdigit():
        call.recording_duration_s = float(duration)
    return call


def transcribe(ctx: JobContext, url: str, business) -> list[dict[str, Any]]:
    """The recording as turns [{speaker, text, start_s}] in time order."""
    channels = split_channels(download(ctx, url))
    prompt = prompts.build_transcription_prompt(business).text
    model = ctx.settings.post_call.transcribe_model
    per_channel = in_parallel(*(
        (lambda speaker=speaker, audio=audio: _channel_segments(ctx.openai, model, prompt, speaker, audio))
        for speaker, audio in zip(CHANNEL_SPEAKERS, channels)))
    segments = sorted((s for channel in per_channel for s in channel), key=lambda s: s["start_s"])
    turns: list[dict[str, Any]] = []
    for segment in segments:
        if turns and turns[-1]["speaker"] == segment["speaker"]:
            turns[-1]["text"] += " " + segment["text"]
        else:
            turns.append(dict(segment))
    return turns


def download(ctx: JobContext, url: str) -> bytes:
    """The recording as a two-channel WAV (Twilio sends mono unless asked for both channels)."""
    settings = ctx.settings
    if not url.startswith(settings.twilio_api_base_url + "/"):
        # The account's credentials go to Twilio's API only, whatever URL a callback named.
        raise RecordingUnusable(f"recording URL is not on {settings.twilio_api_base_url}")
    response = ctx.http.get(f"{url}.wav", params={"RequestedChannels": 2}, timeout=DOWNLOAD_TIMEOUT_S,
                            auth=(settings.twilio_account_sid, settings.twilio_auth_token))
    response.raise_for_status()
    return response.content


def split_channels(wav_bytes: bytes) -> list[bytes]:
    """A two-channel 16-bit WAV as two mono WAVs."""
    try:
        with wave.open(io.BytesIO(wav_bytes)) as reader:
            channels, width, rate = reader.getnchannels(), reader.getsampwidth(), reader.getframerate()
            frames = reader.readframes(reader.getnframes())
    except (wave.Error, EOFError) as exc:
        raise RecordingUnusable(f"not a WAV file: {exc}") from None
    if channels != 2 or width != 2:
        raise RecordingUnusable(f"expected 2 channels of 16-bit audio, got {channels} of {8 * width}-bit")
    if len(frames) / (4 * rate) > MAX_SECONDS:
        raise RecordingUnusable(f"longer than {MAX_SECONDS} s")
    samples = array("h", frames)
    mono = []
    for channel in (0, 1):
        out = io.BytesIO()
        with wave.open(out, "wb") as writer:
            writer.setnchannels(1)
            writer.setsampwidth(2)
            writer.setframerate(rate)
            writer.writeframes(samples[channel::2].tobytes())
        mono.append(out.getvalue())
    return mono


def _channel_segments(client: OpenAI, model: str, prompt: str, speaker: str, audio: bytes) -> list[dict[str, Any]]:
    result = client.audio.transcriptions.create(
        file=(f"{speaker}.wav", audio, "audio/wav"), model=model, language="he", prompt=prompt,
        response_format="verbose_json", timestamp_granularities=["segment"])
    segments = getattr(result, "segments", None)
    if segments is None:
        raise RecordingUnusable(f"{model} gave no segment timestamps")
    return [{"speaker": speaker, "text": s.text.strip(), "start_s": round(float(s.start), 2)}
            for s in segments if s.text.strip()]
