"""A fake OpenAI Realtime API (GA events) on loopback, for the tests.

Modelled on the real websocket API: `session.created` on connect, `session.updated`
on `session.update`, server VAD over the μ-law the client appends (a level threshold,
deaf to line hiss and clicks), and scripted responses streamed as GA events, only when
the client sends `response.create`, each followed by `rate_limits.updated`. The caller's
transcript comes as the real one does, after the `response.created` that answers it (in
deltas, then completed, or failed); responses may end `failed` or `incomplete`; an `error`
may come mid-response; the session may expire or be closed by the server. Every client
event is validated strictly with `services.realtime_protocol`; a failure is recorded and
answered with an `error` event, as the real API answers, and so is an item that names a
`previous_item_id` the conversation does not hold.

Each connection's writers: its handler greenlet (answers client events, runs the VAD),
the greenlet streaming the active response, and short-lived timers (a delayed
`session.updated` or transcript, a transcript that waited long enough, the session's
end). All write through `RealtimeConnection.send`, under the connection's lock.

Run alone (gevent-patched), to try a client against it:
    python -m tests.fakes.realtime_server --port 8765 --first-byte-ms 300 --audio-ms 2000
"""
if __name__ == "__main__":  # patch before anything imports socket; importing the module patches nothing
    from gevent import monkey

    monkey.patch_all()

import argparse  # noqa: E402
import base64  # noqa: E402
import binascii  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import socket  # noqa: E402
import struct  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any, Callable, Mapping, Sequence  # noqa: E402

import gevent  # noqa: E402
import gevent.event  # noqa: E402
from flask import Flask, request  # noqa: E402
from flask_sock import Sock  # noqa: E402
from gevent.pywsgi import WSGIServer  # noqa: E402
from simple_websocket import ConnectionClosed  # noqa: E402
from wsproto.utilities import LocalProtocolError  # noqa: E402

from bench.realtime_peer import (DEFAULT_PREFIX_PADDING_MS, DEFAULT_SILENCE_MS, PATH,  # noqa: E402
                                 SESSION_EXPIRED_MESSAGE, agent_audio_byte, caller_item, default_session,
                                 merge_session, message_item, mulaw_level, new_id, rate_limits_updated,
                                 response_object, status_details, text_pieces, token_usage, transcribes,
                                 transcription_completed, transcription_delta, transcription_failed, vad_level)
from bench.waiting import wait_for  # noqa: E402
from services.realtime_protocol import ProtocolError, validate_client_event  # noqa: E402

log = logging.getLogger("fake_realtime")

VAD_WINDOW_BYTES = 160  # the VAD judges 20 ms at a time, as Twilio's frames come

DEFAULT_REPLY_TEXT = "בשמחה, אני כאן כדי לעזור."
DEFAULT_CALLER_TRANSCRIPT = "שלום"


# --- script ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerError:
    """An `error` event's `error` object."""

    code: str | None = "invalid_value"
    message: str = "Invalid value."
    type: str = "invalid_request_error"
    param: str | None = None


SESSION_EXPIRED = ServerError(code="session_expired", message=SESSION_EXPIRED_MESSAGE)


@dataclass(frozen=True)
class Reply:
    """An audio response: its transcript, and how much audio it streams. With `then_call`, a
    function call item follows the audio in the same response (say goodbye, then end the call).

    `status` "failed" or "incomplete" ends it so after `stop_at_ms` of its audio (failed: none
    by default, and then no item at all; incomplete: half), with `details` as its status_details
    (by default a server_error, or max_output_tokens). `error` is sent right after its
    `response.created`, as a problem the API reports mid-response."""

    text: str = DEFAULT_REPLY_TEXT
    audio_ms: int = 1200
    then_call: "ToolCall | None" = None
    status: str = "completed"
    stop_at_ms: int | None = None
    details: Mapping[str, Any] | None = None
    error: ServerError | None = None

    @property
    def streamed_ms(self) -> int:
        """The audio it streams before it ends."""
        if self.status == "completed":
            return int(self.audio_ms)
        if self.stop_at_ms is not None:
            return min(int(self.audio_ms), int(self.stop_at_ms))
        return int(self.audio_ms) // 2 if self.status == "incomplete" else 0


@dataclass(frozen=True)
class FailedTranscript:
    """In `caller_transcripts`: the caller's turn whose transcription fails."""

    code: str = "audio_unintelligible"
    message: str = "The audio could not be transcribed."


@dataclass(frozen=True)
class ToolCall:
    """A response whose only output is a function call item."""

    name: str
    arguments: Mapping[str, Any] | str = field(default_factory=dict)
    call_id: str | None = None

    @property
    def arguments_json(self) -> str:
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(self.arguments, ensure_ascii=False)


@dataclass
class RealtimeScript:
    """What the fake does. Read live, so a test may change it between connections.

    `responses` and `caller_transcripts` are consumed in order, per connection; the
    defaults are used once a list runs out.
    """

    responses: Sequence[Reply | ToolCall] = ()
    default_reply: Reply = Reply()
    caller_transcripts: Sequence[str | FailedTranscript] = ()
    default_caller_transcript: str = DEFAULT_CALLER_TRANSCRIPT
    # When the caller's transcript comes: "response_created" (the real order: held until the first
    # `response.created` after its commit, or `transcript_wait_ms` after the commit when no
    # response comes), "response_done" (as slow transcription can be: after the answer's
    # `response.done`, or that wait), or "commit" (at once). `transcript_delay_ms` more after that.
    transcript_timing: str = "response_created"
    transcript_wait_ms: int = 2000
    transcript_delay_ms: int = 0
    transcript_deltas: bool = True  # `...transcription.delta` events before the completed one
    rate_limits: bool = True  # `rate_limits.updated` after each `response.created`
    # Server VAD: a 20 ms window is voiced when its decoded level reaches the one the session's
    # threshold asks for (`realtime_peer.vad_level`); speech starts once this much is voiced in a
    # row, so a click is not speech.
    vad_min_speech_ms: int = 40
    # The API ending the session, by connection number (1-based), seconds after it opened:
    # "expire" sends the session_expired error, then closes (1001) as the API does at a session's
    # maximum duration; "close" closes (1011) without a word first.
    expire_after_s: Mapping[int, float] = field(default_factory=dict)
    close_after_s: Mapping[int, float] = field(default_factory=dict)
    # session.updated: "immediate" | "second" (ignore the first update) | "never" | "refuse_first"
    # (an `error` for the first update, whose session is left as it was; the next is applied)
    session_updated: str = "immediate"
    session_updated_delay_ms: int = 0
    refuse_upgrade: bool = False  # answer the upgrade with HTTP 500
    handshake_delay_ms: int = 0  # before answering each upgrade
    drop_after_session_updated_s: float | None = None
    drop_after_responses: int | None = None
    # Faults by connection number (1-based), once that connection's response number
    # `fault_at_response` (0-based) has begun: "drop" cuts the TCP connection (after its first
    # audio); "freeze" keeps it open but sends nothing more, pongs included (after its first
    # audio); "expire" and "close" end the session as `expire_after_s` and `close_after_s` do
    # (after its first audio); "stall" leaves that response hanging after response.created (the
    # socket stays alive).
    faults: Mapping[int, str] = field(default_factory=dict)
    fault_at_response: int = 1
    first_byte_ms: int = 0  # response.created → first audio delta
    # Audio whose every millisecond differs from the one before (`distinct_audio`): a frame lost,
    # repeated or out of order on its way to the caller shows. Otherwise each response's audio is
    # one byte throughout (`agent_audio_byte`).
    distinct_audio: bool = False
    chunk_ms: int = 100
    speed: float | None = None  # None: as fast as the socket takes it; N: N× real time


def distinct_audio(from_ms: int, ms: int) -> bytes:
    """`ms` of a response's audio from `from_ms` on: each millisecond's 8 bytes one value, the
    values counting 1 to 100 over and over (never μ-law silence, 0xFF or 0x7F)."""
    return b"".join(bytes([1 + (from_ms + k) % 100]) * 8 for k in range(ms))


# --- records ---------------------------------------------------------------------------


@dataclass
class ClientEvent:
    t: float  # time.monotonic()
    type: str
    data: dict


@dataclass
class ResponseRecord:
    id: str
    kind: str  # "audio" | "function_call"
    item_id: str
    create_event: dict  # the response.create as the client sent it
    transcript: str = ""
    audio_ms_planned: int = 0
    audio_ms_sent: int = 0
    status: str = "in_progress"
    created_at: float = 0.0
    first_audio_at: float | None = None
    done_at: float | None = None
    tool_call: ToolCall | None = None
    call_id: str | None = None
    call_item_id: str | None = None  # the function call item (after the audio item, or the only one)
    end_status: str = "completed"  # how the script has it end, unless cancelled first
    end_details: dict | None = None
    audio_ms_full: int = 0  # the reply's whole audio; `audio_ms_planned` is what streams before the end
    error: ServerError | None = None
    # Streaming state, guarded by the connection's lock.
    finished: bool = False
    stage: str = "created"  # created → item → audio → done
    transcript_sent: str = ""
    wake: gevent.event.Event = field(default_factory=gevent.event.Event, repr=False)

    @property
    def instructions(self) -> str | None:
        return (self.create_event.get("response") or {}).get("instructions")


@dataclass
class Cancel:
    t: float
    response_id: str | None  # what the client named, if anything
    cancelled: str | None  # the response it cancelled, None when it was an error


@dataclass
class Truncate:
    t: float
    item_id: str
    audio_end_ms: int
    error: str | None = None


# --- the connection --------------------------------------------------------------------


class _LockedSocket:
    """simple-websocket writes with `sock.send`, which may write part of a frame, from two greenlets
    (ours and its reader answering pings and closes): make every write a whole `sendall` under a lock.
    A frozen socket takes every write and sends none of it: a peer that went silent, unclosed."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._lock = threading.Lock()
        self.frozen = False

    def send(self, data: bytes) -> int:
        with self._lock:
            if not self.frozen:
                self._sock.sendall(data)
        return len(data)

    sendall = send

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class RealtimeConnection:
    """One client websocket: what it sent, what the fake answered, and the call's state.

    The handler greenlet owns the VAD state and the script positions. `lock` guards `active`,
    every ResponseRecord's streaming state, `responses`, `item_ids` and `_held_transcripts`
    (the handler, the streaming greenlet and the timers write them), and writes to the socket.
    """

    def __init__(self, fake: "FakeRealtime", ws, headers: dict, query: dict, history: bool) -> None:
        self.fake = fake
        self.script = fake.script
        self.ws = ws
        self.headers = headers
        self.query = query
        self.history = history
        self.opened_at = time.monotonic()
        self.closed_at: float | None = None
        self.dropped_at: float | None = None
        self.session = default_session(query.get("model") or "gpt-realtime")
        self.session_updates = 0
        self.session_updated_sent = 0
        self.events: list[ClientEvent] = []
        self.server_events: list[tuple[float, dict]] = []
        self.invalid_events: list[tuple[Any, str]] = []
        self.errors: list[dict] = []  # every `error` event sent
        self.double_responses: list[dict] = []
        self.cancels: list[Cancel] = []
        self.truncates: list[Truncate] = []
        self.items_created: list[dict] = []
        self.responses: list[ResponseRecord] = []
        self.active: ResponseRecord | None = None
        self.input_ms = 0.0
        self.appended_frames = 0
        self.speech_segments: list[tuple[int, int]] = []  # (audio_start_ms, audio_end_ms) as reported
        self.item_ids: set[str] = set()  # every item the conversation holds
        self.expired_at: float | None = None
        self.closed_by_server_at: float | None = None
        self._speech_item: str | None = None
        self._speech_start_ms = 0
        self._silence_ms = 0.0
        self._voiced_ms = 0.0  # voiced audio in a row before speech counts as started
        self._voiced_from_ms = 0.0
        self._last_item_id: str | None = None
        self._held_transcripts: dict[str, str | FailedTranscript] = {}  # item id → its transcript, in commit order
        self._reply_index = 0
        self._transcript_index = 0
        self._greenlets: list[gevent.Greenlet] = []
        self.number = 0  # 1-based, set by the server as it opens
        self.frozen_at: float | None = None
        self.lock = threading.RLock()

    # --- queries for tests ---

    @property
    def authorization(self) -> str | None:
        return self.headers.get("Authorization")

    @property
    def model(self) -> str | None:
        return self.query.get("model")

    @property
    def closed(self) -> bool:
        return self.closed_at is not None

    def client_events(self, type: str | None = None) -> list[dict]:
        return [e.data for e in self.events if type is None or e.type == type]

    def client_event_records(self, type: str | None = None) -> list[ClientEvent]:
        return [e for e in self.events if type is None or e.type == type]

    def server_event_list(self, type: str | None = None) -> list[dict]:
        return [e for _, e in self.server_events if type is None or e["type"] == type]

    def wait_for_client_event(self, type: str, count: int = 1, timeout: float = 5.0) -> dict:
        return wait_for(lambda: len(self.client_events(type)) >= count and self.client_events(type)[count - 1],
                        timeout, message=f"{count}x client {type}")

    def wait_for_server_event(self, type: str, count: int = 1, timeout: float = 5.0) -> dict:
        return wait_for(lambda: len(self.server_event_list(type)) >= count and self.server_event_list(type)[count - 1],
                        timeout, message=f"{count}x server {type}")

    # --- writing ---

    def send(self, event: dict) -> None:
        event = {"type": event["type"], "event_id": new_id("event"), **event}
        text = json.dumps(event, ensure_ascii=False, separators=(",", ":"))
        with self.lock:
            if self.history or event["type"] != "response.output_audio.delta":
                self.server_events.append((time.monotonic(), event))
            try:
                self.ws.send(text)
            except LocalProtocolError as closing:  # our close frame went first: the socket is done
                raise ConnectionClosed() from closing

    def send_error(self, code: str, message: str, client_event_id: str | None = None,
                   type: str = "invalid_request_error", param: str | None = None) -> None:
        error = {"type": type, "code": code, "message": message, "param": param, "event_id": client_event_id}
        self.errors.append(error)
        self.send({"type": "error", "error": error})

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Close cleanly with a close frame, as the API does at the session's end."""
        with self.lock:
            try:
                self.ws.close(code, reason)
            except (ConnectionClosed, LocalProtocolError, OSError):
                pass

    def drop(self) -> None:
        """Cut the TCP connection without a close frame (reset), as a network failure would."""
        if self.dropped_at is not None:
            return
        self.dropped_at = time.monotonic()
        log.info("dropping connection abruptly")
        raw = self.ws.sock
        try:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            raw.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def freeze(self) -> None:
        """Go silent without closing: no event, no pong, no close from here on."""
        if self.frozen_at is None:
            self.frozen_at = time.monotonic()
            log.info("freezing connection %d", self.number)
            self.ws.sock.frozen = True

    def expire(self) -> None:
        """The session's maximum duration is over: the API says so, then closes (going away)."""
        if self.expired_at is None and not self.closed:
            self.expired_at = time.monotonic()
            log.info("connection %d: session expired", self.number)
            self.send_error(SESSION_EXPIRED.code, SESSION_EXPIRED.message, type=SESSION_EXPIRED.type)
            self.close(1001, SESSION_EXPIRED.message)

    def close_by_server(self) -> None:
        """The API closes the socket on its side, with no event first."""
        if self.closed_by_server_at is None and not self.closed:
            self.closed_by_server_at = time.monotonic()
            log.info("connection %d: closed by the server", self.number)
            self.close(1011, "internal error")

    def _fault(self, index: int) -> str | None:
        """The fault scripted for this connection's response number `index`, if any."""
        if index != self.script.fault_at_response:
            return None
        return self.script.faults.get(self.number)

    def _spawn(self, fn: Callable, *args, delay: float = 0.0) -> None:
        def run() -> None:
            try:
                fn(*args)
            except (ConnectionClosed, OSError):
                log.debug("connection gone while %s ran", fn.__name__)

        self._greenlets.append(gevent.spawn_later(delay, run) if delay else gevent.spawn(run))

    def _kill_greenlets(self) -> None:
        gevent.killall([g for g in self._greenlets if not g.dead], block=False)

    # --- reading ---

    def serve(self) -> None:
        self.send({"type": "session.created", "session": copy.deepcopy(self.session)})
        if self.number in self.script.expire_after_s:
            self._spawn(self.expire, delay=self.script.expire_after_s[self.number])
        if self.number in self.script.close_after_s:
            self._spawn(self.close_by_server, delay=self.script.close_after_s[self.number])
        while True:
            message = self.ws.receive()
            if message is None:
                continue
            self._handle(message)

    def _handle(self, message: str | bytes) -> None:
        t = time.monotonic()
        if isinstance(message, bytes):
            self._invalid(message, "binary frame", None)
            return
        try:
            event = json.loads(message)
        except ValueError as exc:
            self._invalid(message, f"not JSON: {exc}", None)
            return
        if not isinstance(event, dict):
            self._invalid(event, "not a JSON object", None)
            return
        kind = str(event.get("type"))
        if self.history or kind != "input_audio_buffer.append":
            self.events.append(ClientEvent(t=t, type=kind, data=event))
        try:
            validate_client_event(event)
        except ProtocolError as exc:
            self._invalid(event, str(exc), event.get("event_id"))
            return
        handler = self._HANDLERS.get(kind)
        if handler is None:
            log.debug("client event %s accepted, not acted on", kind)
            return
        handler(self, event)

    def _invalid(self, event: Any, reason: str, client_event_id: str | None) -> None:
        log.warning("invalid client event: %s", reason)
        self.invalid_events.append((event, reason))
        code = "unknown_parameter" if "does not define" in reason else "invalid_value"
        self.send_error(code, reason, client_event_id)

    # --- session ---

    def _on_session_update(self, event: dict) -> None:
        self.session_updates += 1
        mode = self.script.session_updated
        if mode == "never" or (mode == "second" and self.session_updates == 1):
            log.info("ignoring session.update #%d (script: %s)", self.session_updates, mode)
            return
        if mode == "refuse_first" and self.session_updates == 1:
            self.send_error("invalid_value", "Invalid value: 'session.voice'.", event.get("event_id"),
                            param="session.voice")
            return
        self.session = merge_session(self.session, event["session"])
        delay = self.script.session_updated_delay_ms / 1000
        if delay:
            self._spawn(self._send_session_updated, delay=delay)
        else:
            self._send_session_updated()

    def _send_session_updated(self) -> None:
        self.send({"type": "session.updated", "session": copy.deepcopy(self.session)})
        self.session_updated_sent += 1
        drop_after = self.script.drop_after_session_updated_s
        if drop_after is not None and self.session_updated_sent == 1:
            self._spawn(self.drop, delay=drop_after)

    def _turn_detection(self) -> dict | None:
        td = ((self.session.get("audio") or {}).get("input") or {}).get("turn_detection")
        return td if isinstance(td, dict) and td.get("type") in ("server_vad", "semantic_vad") else None

    # --- input audio and VAD ---

    def _on_append(self, event: dict) -> None:
        try:
            audio = base64.b64decode(event["audio"], validate=True)
        except (binascii.Error, ValueError) as exc:
            self._invalid(event, f"audio is not base64: {exc}", event.get("event_id"))
            return
        self.appended_frames += 1
        td = self._turn_detection()
        if td is None:
            self.input_ms += len(audio) / 8  # μ-law 8 kHz: 8 bytes a millisecond
            return
        level = vad_level(td.get("threshold"))
        for offset in range(0, len(audio), VAD_WINDOW_BYTES):
            window = audio[offset:offset + VAD_WINDOW_BYTES]
            start_ms = self.input_ms
            self.input_ms += len(window) / 8
            self._vad(td, mulaw_level(window) >= level, start_ms, len(window) / 8)

    def _vad(self, td: dict, voiced: bool, start_ms: float, ms: float) -> None:
        """One window of the caller's audio through the VAD."""
        if self._speech_item is None:
            if not voiced:
                self._voiced_ms = 0.0  # a click or a burst of noise shorter than speech: forgotten
                return
            if self._voiced_ms == 0:
                self._voiced_from_ms = start_ms
            self._voiced_ms += ms
            if self._voiced_ms < self.script.vad_min_speech_ms:
                return
            self._voiced_ms, self._silence_ms = 0.0, 0.0
            self._speech_item = new_id("item")
            # As the real API: the start includes the prefix padding.
            padding = int(td.get("prefix_padding_ms") or DEFAULT_PREFIX_PADDING_MS)
            self._speech_start_ms = max(0, int(self._voiced_from_ms) - padding)
            self.send({"type": "input_audio_buffer.speech_started", "audio_start_ms": self._speech_start_ms,
                       "item_id": self._speech_item})
        elif voiced:
            self._silence_ms = 0.0
        else:
            self._silence_ms += ms
            if self._silence_ms >= int(td.get("silence_duration_ms") or DEFAULT_SILENCE_MS):
                self._end_speech()

    def _end_speech(self) -> None:
        item_id, self._speech_item = self._speech_item, None
        end_ms = int(self.input_ms)  # includes the silence, as the real API reports
        self.speech_segments.append((self._speech_start_ms, end_ms))
        self.send({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": end_ms, "item_id": item_id})
        self._commit(item_id)

    def _commit(self, item_id: str) -> None:
        previous, self._last_item_id = self._last_item_id, item_id
        with self.lock:
            self.item_ids.add(item_id)
        self.send({"type": "input_audio_buffer.committed", "item_id": item_id, "previous_item_id": previous})
        item = caller_item(item_id)
        self.send({"type": "conversation.item.added", "item": item, "previous_item_id": previous})
        self.send({"type": "conversation.item.done", "item": item, "previous_item_id": previous})
        if not transcribes(self.session):
            return
        transcripts = self.script.caller_transcripts
        if self._transcript_index < len(transcripts):
            entry = transcripts[self._transcript_index]
        else:
            entry = self.script.default_caller_transcript
        self._transcript_index += 1
        if self.script.transcript_timing == "commit":
            self._release_transcript(item_id, entry)
            return
        with self.lock:
            self._held_transcripts[item_id] = entry
        self._spawn(self._transcript_waited, item_id, delay=self.script.transcript_wait_ms / 1000)

    def _transcript_waited(self, item_id: str) -> None:
        """No response came after the commit: the transcription is done anyway."""
        with self.lock:
            entry = self._held_transcripts.pop(item_id, None)
        if entry is not None:
            self._release_transcript(item_id, entry)

    def _release_held_transcripts(self) -> None:
        """A response was created: the transcripts held for it come now. Under the lock."""
        held, self._held_transcripts = self._held_transcripts, {}
        for item_id, entry in held.items():
            self._release_transcript(item_id, entry)

    def _release_transcript(self, item_id: str, entry: str | FailedTranscript) -> None:
        delay = self.script.transcript_delay_ms / 1000
        if delay:
            self._spawn(self._send_transcript, item_id, entry, delay=delay)
        else:
            self._send_transcript(item_id, entry)

    def _send_transcript(self, item_id: str, entry: str | FailedTranscript) -> None:
        if isinstance(entry, FailedTranscript):
            self.send(transcription_failed(item_id, entry.code, entry.message))
            return
        if self.script.transcript_deltas and entry:
            for piece in text_pieces(entry, 2):
                if piece:
                    self.send(transcription_delta(item_id, piece))
        self.send(transcription_completed(item_id, entry))

    def _on_input_clear(self, event: dict) -> None:
        self._speech_item = None
        self._silence_ms = 0.0
        self.send({"type": "input_audio_buffer.cleared"})

    def _on_input_commit(self, event: dict) -> None:
        item_id, self._speech_item = self._speech_item or new_id("item"), None
        self._commit(item_id)

    # --- responses ---

    def _next_script_entry(self) -> Reply | ToolCall:
        entries = self.script.responses
        entry = entries[self._reply_index] if self._reply_index < len(entries) else self.script.default_reply
        self._reply_index += 1
        return entry

    def _on_response_create(self, event: dict) -> None:
        with self.lock:
            if self.active is not None:
                log.warning("response.create while %s is active", self.active.id)
                self.double_responses.append(event)
                self.send_error("conversation_already_has_active_response",
                                f"Conversation already has an active response in progress: {self.active.id}. "
                                "Wait until the response is finished before creating a new one.",
                                event.get("event_id"))
                return
            entry = self._next_script_entry()
            index = len(self.responses)
            if isinstance(entry, ToolCall):
                item_id = new_id("item")
                run = ResponseRecord(id=new_id("resp"), kind="function_call", item_id=item_id,
                                     create_event=event, tool_call=entry, call_item_id=item_id,
                                     call_id=entry.call_id or new_id("call"), created_at=time.monotonic())
            else:
                then = entry.then_call
                run = ResponseRecord(id=new_id("resp"), kind="audio", item_id=new_id("item"), create_event=event,
                                     transcript=entry.text, audio_ms_planned=entry.streamed_ms,
                                     audio_ms_full=int(entry.audio_ms), created_at=time.monotonic(), tool_call=then,
                                     call_id=(then.call_id or new_id("call")) if then else None,
                                     call_item_id=new_id("item") if then else None, end_status=entry.status,
                                     end_details=dict(entry.details) if entry.details is not None else None,
                                     error=entry.error)
            self.responses.append(run)
            self.active = run
        self._spawn(self._stream, run, index)

    def _function_item(self, run: ResponseRecord, status: str, arguments: str) -> dict:
        return {"id": run.call_item_id, "object": "realtime.item", "type": "function_call", "status": status,
                "name": run.tool_call.name, "call_id": run.call_id, "arguments": arguments}

    def _usage(self, run: ResponseRecord) -> dict:
        return token_usage(run.instructions or self.session.get("instructions") or "", self.input_ms,
                           len(self.responses) > 1, run.audio_ms_sent,
                           run.transcript_sent or (run.tool_call.arguments_json if run.tool_call else ""))

    def _pause(self, run: ResponseRecord, until: float) -> bool:
        """Sleep until the monotonic deadline; False if the response was finished (cancelled) meanwhile."""
        delay = until - time.monotonic()
        if delay > 0:
            run.wake.wait(delay)
        else:
            gevent.sleep(0)  # let the handler read a cancel between chunks
        return not run.finished

    def _stream(self, run: ResponseRecord, index: int) -> None:
        with self.lock:
            if run.finished:
                return
            self.send({"type": "response.created", "response": response_object(self.session, run, "in_progress", [])})
            if self.script.rate_limits:
                self.send(rate_limits_updated())
            if self.script.transcript_timing == "response_created":
                self._release_held_transcripts()
            if run.error is not None:
                error = run.error
                self.send_error(error.code, error.message, type=error.type, param=error.param)
            if run.kind == "function_call":
                self._finish_function_call(run)
                return
            if run.end_status != "completed" and run.audio_ms_planned == 0:
                self._done(run, run.end_status, [])  # it failed before it said anything: no item
                return
            item = message_item(run, "in_progress", with_content=False)
            self.send({"type": "response.output_item.added", "response_id": run.id, "output_index": 0, "item": item})
            self.send({"type": "conversation.item.added", "item": item, "previous_item_id": self._last_item_id})
            self._last_item_id = run.item_id
            self.item_ids.add(run.item_id)
            self.send({"type": "response.content_part.added", "response_id": run.id, "item_id": run.item_id,
                       "output_index": 0, "content_index": 0, "part": {"type": "audio", "transcript": ""}})
            run.stage = "item"
        fault = self._fault(index)
        if fault == "stall":
            log.info("stalling response %s", run.id)
            run.wake.wait()  # until cancelled (or the connection goes)
            return
        script = self.script
        start = time.monotonic()
        if not self._pause(run, start + script.first_byte_ms / 1000):
            return
        chunk_ms = max(20, int(script.chunk_ms))
        n = math.ceil(run.audio_ms_planned / chunk_ms)
        # The words spread over the whole reply: one that ends early has said only its first ones.
        pieces = text_pieces(run.transcript, max(n, math.ceil(run.audio_ms_full / chunk_ms)))
        pattern = bytes([agent_audio_byte(index)])
        t0 = time.monotonic()
        for k in range(n):
            due = t0 + k * chunk_ms / 1000 / script.speed if script.speed else 0.0
            if not self._pause(run, due):
                return
            with self.lock:
                if run.finished:
                    return
                ms = min(chunk_ms, run.audio_ms_planned - run.audio_ms_sent)
                run.stage = "audio"
                if run.first_audio_at is None:
                    run.first_audio_at = time.monotonic()
                self.send({"type": "response.output_audio.delta", "response_id": run.id, "item_id": run.item_id,
                           "output_index": 0, "content_index": 0,
                           "delta": base64.b64encode(distinct_audio(run.audio_ms_sent, ms) if script.distinct_audio
                                                     else pattern * (ms * 8)).decode("ascii")})
                run.audio_ms_sent += ms
                if pieces[k]:
                    run.transcript_sent += pieces[k]
                    self.send({"type": "response.output_audio_transcript.delta", "response_id": run.id,
                               "item_id": run.item_id, "output_index": 0, "content_index": 0, "delta": pieces[k]})
            if k == 0 and fault in self._FAULTS:
                self._FAULTS[fault](self)
                return
        with self.lock:
            if not run.finished:
                if run.end_status == "completed":
                    run.transcript_sent = run.transcript  # an audio-less reply still has its transcript
                self._finish(run, run.end_status)
        self._after_response()

    def _finish_function_call(self, run: ResponseRecord) -> None:
        done_item = self._send_function_call(run, 0)
        run.stage = "done"
        self._done(run, "completed", [done_item])
        self._after_response()

    def _send_function_call(self, run: ResponseRecord, output_index: int) -> dict:
        """The function call item's events, at `output_index` of the response; returns the done item."""
        arguments = run.tool_call.arguments_json
        item_id = run.call_item_id
        self.send({"type": "response.output_item.added", "response_id": run.id, "output_index": output_index,
                   "item": self._function_item(run, "in_progress", "")})
        self.send({"type": "conversation.item.added", "item": self._function_item(run, "in_progress", ""),
                   "previous_item_id": self._last_item_id})
        self._last_item_id = item_id
        self.item_ids.add(item_id)
        self.send({"type": "response.function_call_arguments.delta", "response_id": run.id, "item_id": item_id,
                   "output_index": output_index, "call_id": run.call_id, "delta": arguments})
        self.send({"type": "response.function_call_arguments.done", "response_id": run.id, "item_id": item_id,
                   "output_index": output_index, "call_id": run.call_id, "name": run.tool_call.name,
                   "arguments": arguments})
        done_item = self._function_item(run, "completed", arguments)
        self.send({"type": "response.output_item.done", "response_id": run.id, "output_index": output_index,
                   "item": done_item})
        self.send({"type": "conversation.item.done", "item": done_item})
        return done_item

    def _finish(self, run: ResponseRecord, status: str) -> None:
        """The tail of an audio response, as the API sends it on completion and on cancel. Under the lock."""
        output: list = []
        if run.stage in ("item", "audio"):
            base = {"response_id": run.id, "item_id": run.item_id, "output_index": 0, "content_index": 0}
            self.send({"type": "response.output_audio.done", **base})
            self.send({"type": "response.output_audio_transcript.done", **base, "transcript": run.transcript_sent})
            self.send({"type": "response.content_part.done", **base,
                       "part": {"type": "audio", "transcript": run.transcript_sent}})
            item = message_item(run, "completed" if status == "completed" else "incomplete", with_content=True)
            self.send({"type": "response.output_item.done", "response_id": run.id, "output_index": 0, "item": item})
            self.send({"type": "conversation.item.done", "item": item})
            output = [item]
        if status == "completed" and run.tool_call is not None:
            output.append(self._send_function_call(run, len(output)))
        run.stage = "done"
        self._done(run, status, output)

    def _done(self, run: ResponseRecord, status: str, output: list) -> None:
        run.finished = True
        run.status = status
        run.done_at = time.monotonic()
        run.wake.set()
        if self.active is run:
            self.active = None  # before response.done: a create right after it must succeed
        details = run.end_details if status == run.end_status and run.end_details is not None else None
        self.send({"type": "response.done", "response": response_object(
            self.session, run, status, output, self._usage(run), details or status_details(status))})
        if self.script.transcript_timing == "response_done":
            self._release_held_transcripts()

    def _after_response(self) -> None:
        limit = self.script.drop_after_responses
        if limit is not None and sum(r.finished for r in self.responses) >= limit:
            self.drop()

    def _on_response_cancel(self, event: dict) -> None:
        wanted = event.get("response_id")
        with self.lock:
            run = self.active
            if run is None or (wanted and wanted != run.id):
                self.cancels.append(Cancel(t=time.monotonic(), response_id=wanted, cancelled=None))
                self.send_error("response_cancel_not_active", "Cancellation failed: no active response found",
                                event.get("event_id"))
                return
            self.cancels.append(Cancel(t=time.monotonic(), response_id=wanted, cancelled=run.id))
            if run.kind == "function_call":
                self._done(run, "cancelled", [])
            else:
                self._finish(run, "cancelled")
        self._after_response()

    @property
    def cancel_errors(self) -> list[Cancel]:
        return [c for c in self.cancels if c.cancelled is None]

    # --- conversation items ---

    def _on_truncate(self, event: dict) -> None:
        item_id, end_ms = event["item_id"], int(event["audio_end_ms"])
        record = Truncate(t=time.monotonic(), item_id=item_id, audio_end_ms=end_ms)
        self.truncates.append(record)
        run = next((r for r in self.responses if r.item_id == item_id and r.kind == "audio"), None)
        if run is None:
            record.error = f"Item with item_id {item_id} not found"
        elif end_ms > run.audio_ms_sent:
            record.error = f"Audio content of {run.audio_ms_sent}ms is already shorter than {end_ms}ms"
        if record.error:
            self.send_error("invalid_value", record.error, event.get("event_id"), param="audio_end_ms")
            return
        self.send({"type": "conversation.item.truncated", "item_id": item_id, "content_index": 0,
                   "audio_end_ms": end_ms})

    @property
    def truncate_errors(self) -> list[Truncate]:
        return [t for t in self.truncates if t.error]

    def _on_item_create(self, event: dict) -> None:
        previous = event.get("previous_item_id")
        with self.lock:
            known = previous is None or previous == "root" or previous in self.item_ids
        if not known:  # as the API: an error, and the item is not added
            self.send_error("invalid_value", f"Previous item with item_id {previous} not found",
                            event.get("event_id"), param="previous_item_id")
            return
        item = {"id": new_id("item"), "object": "realtime.item", "status": "completed", **event["item"]}
        self.items_created.append(item)
        previous = previous or self._last_item_id
        self._last_item_id = item["id"]
        with self.lock:
            self.item_ids.add(item["id"])
        self.send({"type": "conversation.item.added", "item": item, "previous_item_id": previous})
        self.send({"type": "conversation.item.done", "item": item, "previous_item_id": previous})

    _FAULTS: dict[str, Callable[["RealtimeConnection"], None]] = {
        "drop": drop, "freeze": freeze, "expire": expire, "close": close_by_server,
    }

    _HANDLERS: dict[str, Callable[["RealtimeConnection", dict], None]] = {
        "session.update": _on_session_update,
        "input_audio_buffer.append": _on_append,
        "input_audio_buffer.clear": _on_input_clear,
        "input_audio_buffer.commit": _on_input_commit,
        "response.create": _on_response_create,
        "response.cancel": _on_response_cancel,
        "conversation.item.truncate": _on_truncate,
        "conversation.item.create": _on_item_create,
    }


# --- the server ------------------------------------------------------------------------


class _NoDelayServer(WSGIServer):
    def handle(self, sock, address):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # Nagle would bunch the deltas
        except OSError:
            pass
        super().handle(sock, address)


class FakeRealtime:
    """The fake API on 127.0.0.1. `history=False` keeps no audio events (for long runs)."""

    def __init__(self, script: RealtimeScript | None = None, host: str = "127.0.0.1", port: int = 0,
                 history: bool = True) -> None:
        self.script = script or RealtimeScript()
        self.history = history
        self.connections: list[RealtimeConnection] = []
        self.refused: list[dict] = []  # headers of upgrades refused with 500
        self.upgrades = 0  # upgrade requests received, answered or not yet
        self._host, self._port = host, port
        self._server: WSGIServer | None = None
        self.app = self._make_app()

    def _make_app(self) -> Flask:
        app = Flask("fake_realtime")
        sock = Sock(app)

        @app.before_request
        def refuse():
            if request.path != PATH:
                return None
            self.upgrades += 1
            if self.script.refuse_upgrade:
                self.refused.append(dict(request.headers))
                return "upgrade refused by script", 500
            if self.script.handshake_delay_ms:
                gevent.sleep(self.script.handshake_delay_ms / 1000)  # TLS and the upgrade, far away
            return None

        @sock.route(PATH)
        def realtime(ws):
            ws.sock = _LockedSocket(ws.sock)
            conn = RealtimeConnection(self, ws, dict(request.headers), request.args.to_dict(), self.history)
            self.connections.append(conn)
            conn.number = len(self.connections)
            log.info("connection %d opened", len(self.connections))
            try:
                conn.serve()
            except (ConnectionClosed, OSError):
                pass
            except Exception:  # noqa: BLE001 - anything else would make Flask write a 500 into the socket
                log.exception("fake realtime handler failed")
                conn.close(1011)
            finally:
                conn.closed_at = time.monotonic()
                conn._kill_greenlets()
                log.info("connection %d closed", self.connections.index(conn) + 1)
                if not self.history:
                    self.connections.remove(conn)

        return app

    # --- lifecycle ---

    def start(self) -> "FakeRealtime":
        self._server = _NoDelayServer((self._host, self._port), self.app, log=None, error_log=log)
        self._server.start()
        return self

    def stop(self) -> None:
        for conn in list(self.connections):
            if not conn.closed:
                conn.close(1001, "server stopping")
            conn._kill_greenlets()
        if self._server is not None:
            self._server.stop(timeout=1)
            self._server = None

    def __enter__(self) -> "FakeRealtime":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._server.server_port

    @property
    def url(self) -> str:
        return f"ws://{self._host}:{self.port}{PATH}"

    # --- across connections ---

    @property
    def invalid_events(self) -> list[tuple[Any, str]]:
        return [e for c in self.connections for e in c.invalid_events]

    @property
    def double_responses(self) -> list[dict]:
        return [e for c in self.connections for e in c.double_responses]

    @property
    def responses(self) -> list[ResponseRecord]:
        return [r for c in self.connections for r in c.responses]

    def client_events(self, type: str | None = None) -> list[dict]:
        return [e for c in self.connections for e in c.client_events(type)]

    def carried(self) -> list[RealtimeConnection]:
        """The connections the client sent anything on. A stream the server refuses may have had
        one opened for it while it waited for `start`; that one must carry nothing."""
        return [c for c in self.connections if c.client_events()]

    def nothing_reached_the_model(self, timeout: float = 5.0) -> bool:
        """No connection carried anything, and every one opened is closed again within `timeout`."""
        return not self.carried() and self.wait_for(lambda: all(c.closed for c in self.connections), timeout)

    def wait_for_connection(self, count: int = 1, timeout: float = 5.0) -> RealtimeConnection:
        return wait_for(lambda: len(self.connections) >= count and self.connections[count - 1], timeout,
                        message=f"{count} realtime connection(s)")

    def wait_for_event(self, type: str, count: int = 1, timeout: float = 5.0,
                       connection: RealtimeConnection | None = None) -> dict:
        """The count-th client event of this type (over all connections unless one is given)."""
        source = connection or self
        return wait_for(lambda: len(source.client_events(type)) >= count and source.client_events(type)[count - 1],
                        timeout, message=f"{count}x client event {type}")

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0, message: str = "condition") -> Any:
        return wait_for(predicate, timeout, message=message)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fake OpenAI Realtime API (GA) on loopback.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--first-byte-ms", type=int, default=0)
    parser.add_argument("--audio-ms", type=int, default=1200)
    parser.add_argument("--chunk-ms", type=int, default=100)
    parser.add_argument("--speed", type=float, default=None, help="N× real time; default as fast as possible")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    script = RealtimeScript(default_reply=Reply(audio_ms=args.audio_ms), first_byte_ms=args.first_byte_ms,
                            chunk_ms=args.chunk_ms, speed=args.speed)
    fake = FakeRealtime(script, host=args.host, port=args.port, history=False).start()
    log.info("fake realtime listening on %s", fake.url)
    try:
        gevent.wait()
    finally:
        fake.stop()


if __name__ == "__main__":
    main()
