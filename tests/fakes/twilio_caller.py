"""A fake Twilio: the webhook request, then a caller on the Media Streams websocket.

`place_call` posts Twilio's form fields and reads the TwiML. `FakeTwilioCall` is the
bidirectional stream as Twilio runs it: 20 ms μ-law frames up (silence, or a steady tone while
`speak` is on), and the server's audio played out at real-time pace, with marks echoed when
playout reaches them and `clear` obeyed (buffered audio dropped, its marks echoed at once).
It keeps what the caller actually heard, so tests can speak of latency and barge-in in the
caller's terms.

`Line` says how far from ideal Twilio's side is: frames late by a random jitter or held back and
delivered in clumps, mark echoes delayed (played out of a jitter buffer), marks never echoed.
All randomness comes from the line's seed. The default line is ideal: every frame on its 20 ms
tick, every mark echoed the moment playout reaches it. `tagged=True` writes each frame's chunk
number into its audio (`read_tag`), so a test can tell which frames reached the model, in what
order.

Greenlets per call: sender (caller audio), receiver (server messages), playout, and an echoer
when marks are delayed.
"""
from __future__ import annotations

import base64
import binascii
import collections
import json
import logging
import math
import random
import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

import gevent
import gevent.event
import websocket

from bench.twilio_peer import (FRAME_BYTES, FRAME_MS, SILENCE_FRAME, SPEECH_FRAME, TEST_ACCOUNT_SID,  # noqa: F401
                               PlacedCall, new_sid, parse_twiml, place_call, twilio_form)
from bench.waiting import wait_for

log = logging.getLogger("fake_twilio")


# --- the line --------------------------------------------------------------------------

FRAME_S = FRAME_MS / 1000


@dataclass(frozen=True)
class Line:
    """How Twilio's side of the call behaves. The default is an ideal line.

    - `jitter_ms`: each frame leaves up to this long after its 20 ms tick (uniform); never
      before the frame ahead of it, so order is kept, and the media `timestamp` stays nominal.
    - `burst_chance`, `burst_frames`: with this chance a frame starts a clump: it and the next
      `burst_frames - 1` are held back and leave together, when the last of them is due.
    - `mark_delay_ms`: (low, high): an echo leaves this long (uniform) after playout reached its
      mark, in order. A `clear` still echoes every mark it finds at once, delayed ones first.
    - `withhold_marks`: marks (by name) never echoed, not even on `clear`.
    """

    seed: int = 0
    jitter_ms: float = 0.0
    burst_chance: float = 0.0
    burst_frames: int = 1
    mark_delay_ms: tuple[float, float] = (0.0, 0.0)
    withhold_marks: Callable[[str], bool] | None = None

    @property
    def delays_marks(self) -> bool:
        return self.mark_delay_ms[1] > 0

    @property
    def max_lag_s(self) -> float:
        """The most a frame may leave after its tick."""
        return self.jitter_ms / 1000 + (max(1, self.burst_frames) - 1) * FRAME_S

    def send_offsets(self) -> Iterator[float]:
        """When each frame leaves, in seconds from the stream's start: frame k's tick is k·20 ms."""
        rng = random.Random(f"{self.seed}:frames")
        k, last = 0, 0.0
        while True:
            clump = self.burst_frames if self.burst_frames > 1 and rng.random() < self.burst_chance else 1
            release = (k + clump - 1) * FRAME_S + rng.uniform(0, self.jitter_ms / 1000)
            for _ in range(clump):
                last = max(last, release, k * FRAME_S)
                yield last
                k += 1

    def mark_delays(self) -> Iterator[float]:
        """Each echo's delay after playout reached its mark, in seconds."""
        rng = random.Random(f"{self.seed}:marks")
        low, high = self.mark_delay_ms
        while True:
            yield rng.uniform(low, high) / 1000

    def withholds(self, name: str) -> bool:
        return self.withhold_marks is not None and self.withhold_marks(name)


def withhold_all(name: str) -> bool:
    """For `Line.withhold_marks`: no mark ever comes back."""
    return True


# A line as Twilio's often is: frames a little late, now and then a clump, echoes from a jitter buffer.
ROUGH_LINE = Line(seed=1, jitter_ms=30, burst_chance=0.05, burst_frames=6, mark_delay_ms=(40.0, 200.0))

# Tagged frames carry their chunk number in the sign bit of the first 32 samples: silence stays
# silence (μ-law zero has both signs), speech stays speech.
_TAG_BYTES = 32
_SIGN = 0x80


def tagged_frame(chunk: int, speech: bool) -> bytes:
    """The caller's frame number `chunk`, its number written into its audio."""
    frame = bytearray(SPEECH_FRAME if speech else SILENCE_FRAME)
    for i in range(_TAG_BYTES):
        if chunk >> i & 1:
            frame[i] ^= _SIGN
    return bytes(frame)


def read_tag(audio: bytes) -> tuple[int, bool] | None:
    """(chunk number, speech) of a tagged frame; None for anything else."""
    for base, speech in ((SILENCE_FRAME, False), (SPEECH_FRAME, True)):
        if len(audio) == FRAME_BYTES and audio[_TAG_BYTES:] == base[_TAG_BYTES:]:
            diff = [a ^ b for a, b in zip(audio[:_TAG_BYTES], base)]
            if all(d in (0, _SIGN) for d in diff):
                return sum(1 << i for i, d in enumerate(diff) if d), speech
    return None



# --- the media stream ------------------------------------------------------------------


@dataclass
class Segment:
    """Agent audio between two marks, as received and as heard."""

    index: int
    start_mark: str | None  # the mark before it, if any
    end_mark: str | None = None  # the mark after it, once received
    received_ms: float = 0.0
    heard_ms: float = 0.0
    cleared_ms: float = 0.0  # dropped from the buffer by `clear`
    first_received_at: float | None = None
    first_heard_at: float | None = None
    last_heard_at: float | None = None


@dataclass
class ClearRecord:
    t: float
    dropped_ms: float  # buffered agent audio discarded
    marks_echoed: list[str]
    playing: Segment | None  # the segment being heard when `clear` arrived
    playing_heard_ms: float  # how much of it the caller had heard then


@dataclass
class SpeechRecord:
    started_at: float  # when its first frame was sent
    ms: int
    ended_at: float | None = None  # when the first silent frame after it was sent


@dataclass
class _Audio:
    data: bytes
    segment: Segment
    offset: int = 0


@dataclass
class _Mark:
    name: str


class FakeTwilioCall:
    """One call's Media Stream, as Twilio runs it. Use `start()` (or `with`), then speak and wait.

    Guards (`_lock`): the playout buffer, segments, deferred and delayed marks and every
    heard/received figure. Written by the receiver (media, mark, clear), by playout (each 20 ms
    tick) and by the echoer (delayed marks). `_echo_lock` makes "which marks are reached" and
    their echo one act, so echoes leave in order; taken by the receiver (mark, clear), playout
    and the echoer, before `_lock` and `_send_lock`. `_send_lock` orders writes to the socket
    with their sequence numbers. The sender greenlet owns the speech schedule; `speak` only
    extends it.
    """

    def __init__(self, media_ws_url: str, call_sid: str, parameters: Mapping[str, str] | None = None,
                 stream_sid: str | None = None, account_sid: str = TEST_ACCOUNT_SID,
                 headers: Mapping[str, str] | None = None, connect_timeout: float = 5.0,
                 line: Line = Line(), tagged: bool = False) -> None:
        self.url = media_ws_url
        self.call_sid = call_sid
        self.parameters = dict(parameters or {})
        self.stream_sid = stream_sid or new_sid("MZ")
        self.account_sid = account_sid
        self.headers = dict(headers or {})
        self.connect_timeout = connect_timeout
        self.line = line
        self.tagged = tagged
        self.ws: websocket.WebSocket | None = None
        self.started_at: float | None = None
        # Caller side (owned by the sender greenlet, except speak() extending the schedule).
        self.frames_sent = 0
        self.speech_log: list[SpeechRecord] = []
        self.dtmf_sent: list[tuple[float, str]] = []
        self._speak_until_frame = 0
        # Server side.
        self.segments: list[Segment] = []
        self.clears: list[ClearRecord] = []
        self.marks_received: list[tuple[float, str]] = []
        self.marks_reached: list[tuple[float, str]] = []  # playout got there (or nothing was before it)
        self.marks_echoed: list[tuple[float, str]] = []
        self.marks_withheld: list[str] = []
        self.protocol_errors: list[str] = []
        self.messages_received = 0
        self.media_received = 0
        self.received_ms = 0.0
        self.heard_ms = 0.0
        self.max_buffered_ms = 0.0
        self.first_audio_received_at: float | None = None
        self.first_heard_at: float | None = None
        self.last_heard_at: float | None = None
        self.playout_log: list[tuple[float, float, int]] = []  # (tick time, ms heard, segment index)
        self.unplayed_at_close_ms: float | None = None
        self.closed_at: float | None = None
        self.close_code: int | None = None  # None: the socket closed without a close frame
        self.close_reason = ""
        self.closed_by_server = False
        self.greenlet_errors: list[str] = []
        self._buffer: collections.deque[_Audio | _Mark] = collections.deque()
        self._buffered_bytes = 0
        self._deferred_marks: list[str] = []  # crossed inside a frame: echoed when that frame ends
        self._rx_segment: Segment | None = None
        self._last_mark: str | None = None
        self._last_played_segment: Segment | None = None
        self._delayed_marks: collections.deque[tuple[float, str]] = collections.deque()  # (due, name)
        self._mark_delays = line.mark_delays()
        self._echo_wakeup = gevent.event.Event()
        self._lock = threading.Lock()
        self._echo_lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._seq = 0
        self._close_sent = False
        self._greenlets: list[gevent.Greenlet] = []

    # --- lifecycle ---

    def start(self) -> "FakeTwilioCall":
        header = [f"{k}: {v}" for k, v in self.headers.items()]
        self.ws = websocket.create_connection(self.url, header=header, timeout=self.connect_timeout,
                                              enable_multithread=True)
        self.ws.settimeout(None)  # the receiver blocks until the server speaks or closes
        self._send_json({"event": "connected", "protocol": "Call", "version": "1.0.0"}, sequenced=False)
        self._send_json({"event": "start", "streamSid": self.stream_sid, "start": {
            "streamSid": self.stream_sid, "accountSid": self.account_sid, "callSid": self.call_sid,
            "tracks": ["inbound"], "customParameters": self.parameters,
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}})
        self.started_at = time.monotonic()
        loops = [self._receiver, self._sender, self._playout] + ([self._echoer] if self.line.delays_marks else [])
        self._greenlets = [gevent.spawn(self._guard, fn) for fn in loops]
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Hang up as Twilio does: a `stop` message, then a clean close."""
        if self.ws is None or self.closed:
            self._halt()
            return
        try:
            self._send_json({"event": "stop", "streamSid": self.stream_sid,
                             "stop": {"accountSid": self.account_sid, "callSid": self.call_sid}})
            with self._send_lock:
                self._close_sent = True
                self.ws.send_close(websocket.STATUS_NORMAL)
        except (websocket.WebSocketException, OSError):
            pass
        try:
            wait_for(lambda: self.closed, timeout, message="the server to answer the close")
        except AssertionError:
            log.warning("server did not answer the close within %.1fs", timeout)
        self._halt()

    def close_abruptly(self) -> None:
        """The caller's network vanishes: no stop, no close frame."""
        if self.ws is not None and self.ws.sock is not None:
            try:
                self.ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.ws.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        wait_for(lambda: self.closed, 2.0, message="the receiver to see the socket gone")
        self._halt()

    def _halt(self) -> None:
        self._echo_wakeup.set()
        gevent.killall([g for g in self._greenlets if not g.dead and g is not gevent.getcurrent()], block=True,
                       timeout=1)
        if self.ws is not None:
            self.ws.shutdown()

    def __enter__(self) -> "FakeTwilioCall":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def closed(self) -> bool:
        return self.closed_at is not None

    def _guard(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except gevent.GreenletExit:
            raise
        except Exception as exc:  # noqa: BLE001 - a fake's own failure must show in the test, not vanish
            log.exception("fake Twilio %s failed", fn.__name__)
            self.greenlet_errors.append(f"{fn.__name__}: {exc!r}")

    # --- sending ---

    def send_event(self, message: dict) -> bool:
        """Any Twilio message, with the next sequence number (a second `start`, say)."""
        return self._send_json(message)

    def _send_json(self, message: dict, sequenced: bool = True) -> bool:
        """Send with the next sequence number; False once a close frame went out (nothing may follow it)."""
        with self._send_lock:
            if self._close_sent:
                return False
            if sequenced:
                self._seq += 1
                message = {"event": message["event"], "sequenceNumber": str(self._seq), **message}
            self.ws.send(json.dumps(message, separators=(",", ":")))
            return True

    def send_raw(self, data: str | bytes) -> None:
        """Anything at all, as text or binary (for malformed-frame tests)."""
        with self._send_lock:
            if isinstance(data, bytes):
                self.ws.send_binary(data)
            else:
                self.ws.send(data)

    def speak(self, ms: int, wait: bool = False) -> None:
        """Send speech frames for `ms` from the next frame on (extends speech already under way)."""
        frames = math.ceil(ms / FRAME_MS)
        self._speak_until_frame = max(self._speak_until_frame, self.frames_sent) + frames
        if wait:
            wait_for(lambda: self.frames_sent >= self._speak_until_frame, ms / 1000 + self.line.max_lag_s + 2.0,
                     message=f"{ms} ms of speech to be sent")

    @property
    def sending(self) -> bool:
        """The sender greenlet still runs (it stops once the socket is closed)."""
        return len(self._greenlets) > 1 and not self._greenlets[1].dead

    @property
    def speaking(self) -> bool:
        return self.frames_sent < self._speak_until_frame

    def dtmf(self, digit: str) -> None:
        self.dtmf_sent.append((time.monotonic(), digit))
        self._send_json({"event": "dtmf", "streamSid": self.stream_sid,
                         "dtmf": {"track": "inbound_track", "digit": digit}})

    def _payload(self, k: int, speech: bool) -> str:
        if self.tagged:
            return base64.b64encode(tagged_frame(k + 1, speech)).decode("ascii")
        return self._payload_speech if speech else self._payload_silence

    _payload_silence = base64.b64encode(SILENCE_FRAME).decode("ascii")
    _payload_speech = base64.b64encode(SPEECH_FRAME).decode("ascii")

    def _sender(self) -> None:
        """Frame k leaves at the line's offset for it (k·20 ms from `started_at` on an ideal
        line), on a fixed schedule: frames late for their time go out at once."""
        offsets = self.line.send_offsets()
        while not self.closed:
            k = self.frames_sent
            delay = self.started_at + next(offsets) - time.monotonic()
            if delay > 0:
                gevent.sleep(delay)
            speech = k < self._speak_until_frame
            now = time.monotonic()
            if speech and (not self.speech_log or self.speech_log[-1].ended_at is not None):
                self.speech_log.append(SpeechRecord(started_at=now, ms=0))
            elif not speech and self.speech_log and self.speech_log[-1].ended_at is None:
                self.speech_log[-1].ended_at = now
            if speech:
                self.speech_log[-1].ms += FRAME_MS
            try:
                if not self._send_json({"event": "media", "streamSid": self.stream_sid, "media": {
                        "track": "inbound", "chunk": str(k + 1), "timestamp": str(k * FRAME_MS),
                        "payload": self._payload(k, speech)}}):
                    return  # closed
            except (websocket.WebSocketException, OSError):
                return  # the socket is gone; the receiver records how
            self.frames_sent = k + 1

    # --- receiving ---

    def _receiver(self) -> None:
        fragments: list[bytes] = []
        fragment_opcode = 0
        while True:
            try:
                frame = self.ws.recv_frame()
            except (websocket.WebSocketException, OSError, AttributeError):
                self._on_closed(None, "")  # no close frame: the connection just went away
                return
            op = frame.opcode
            if op == websocket.ABNF.OPCODE_CLOSE:
                code = struct.unpack("!H", frame.data[:2])[0] if len(frame.data) >= 2 else 1005
                reason = frame.data[2:].decode("utf-8", "replace")
                with self._send_lock:
                    initiated_here = self._close_sent
                    if not initiated_here:
                        self._close_sent = True
                        try:
                            self.ws.send_close(code if code != 1005 else websocket.STATUS_NORMAL)
                        except (websocket.WebSocketException, OSError):
                            pass
                self.closed_by_server = not initiated_here
                self._on_closed(code, reason)
                return
            if op == websocket.ABNF.OPCODE_PING:
                self.ws.pong(frame.data)
                continue
            if op == websocket.ABNF.OPCODE_PONG:
                continue
            if op in (websocket.ABNF.OPCODE_TEXT, websocket.ABNF.OPCODE_BINARY):
                fragment_opcode, fragments = op, [frame.data]
            elif op == websocket.ABNF.OPCODE_CONT:
                fragments.append(frame.data)
            if not frame.fin:
                continue
            data = b"".join(fragments)
            if fragment_opcode == websocket.ABNF.OPCODE_BINARY:
                self._protocol_error(f"binary frame of {len(data)} bytes (Twilio takes JSON text)")
                continue
            self._on_message(data.decode("utf-8", "replace"))

    def _on_closed(self, code: int | None, reason: str) -> None:
        with self._lock:
            self.unplayed_at_close_ms = self._buffered_bytes / 8
        self.close_code, self.close_reason = code, reason
        self.closed_at = time.monotonic()
        self._echo_wakeup.set()
        log.info("media socket closed (code %s, by %s)", code, "server" if self.closed_by_server else "caller/network")

    def _protocol_error(self, what: str) -> None:
        log.warning("server sent what Twilio would not accept: %s", what)
        self.protocol_errors.append(what)

    def _on_message(self, text: str) -> None:
        self.messages_received += 1
        try:
            message = json.loads(text)
        except ValueError:
            self._protocol_error(f"not JSON: {text[:80]!r}")
            return
        if not isinstance(message, dict):
            self._protocol_error(f"not a JSON object: {text[:80]!r}")
            return
        event = message.get("event")
        if event not in ("media", "mark", "clear"):
            self._protocol_error(f"unknown event {event!r}")
            return
        if message.get("streamSid") != self.stream_sid:
            self._protocol_error(f"{event} with streamSid {message.get('streamSid')!r}, not {self.stream_sid!r}")
            return
        if event == "media":
            self._on_media(message)
        elif event == "mark":
            name = (message.get("mark") or {}).get("name") if isinstance(message.get("mark"), dict) else None
            if not isinstance(name, str) or not name:
                self._protocol_error(f"mark without a name: {text[:80]!r}")
                return
            self._on_mark(name)
        else:
            self._on_clear()

    def _on_media(self, message: dict) -> None:
        media = message.get("media")
        payload = media.get("payload") if isinstance(media, dict) else None
        if not isinstance(payload, str) or not payload:
            self._protocol_error("media without a payload")
            return
        try:
            audio = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            self._protocol_error("media payload is not base64")
            return
        now = time.monotonic()
        with self._lock:
            self.media_received += 1
            if self._rx_segment is None:
                self._rx_segment = Segment(index=len(self.segments), start_mark=self._last_mark)
                self.segments.append(self._rx_segment)
            segment = self._rx_segment
            if segment.first_received_at is None:
                segment.first_received_at = now
            if self.first_audio_received_at is None:
                self.first_audio_received_at = now
            segment.received_ms += len(audio) / 8
            self.received_ms += len(audio) / 8
            self._buffer.append(_Audio(audio, segment))
            self._buffered_bytes += len(audio)
            self.max_buffered_ms = max(self.max_buffered_ms, self._buffered_bytes / 8)

    def _on_mark(self, name: str) -> None:
        now = time.monotonic()
        with self._echo_lock:
            with self._lock:
                self.marks_received.append((now, name))
                if self._rx_segment is not None:
                    self._rx_segment.end_mark = name
                    self._rx_segment = None
                self._last_mark = name
                if self._buffered_bytes:
                    self._buffer.append(_Mark(name))
                    return
                if self._deferred_marks:  # keep the order: it is reached right after them
                    self._deferred_marks.append(name)
                    return
                # Nothing left to play before it: reached now, with any marks still queued.
                reached = [m.name for m in self._buffer] + [name]
                self._buffer.clear()
            self._reached(reached)

    def _on_clear(self) -> None:
        with self._echo_lock:
            self._clear()

    def _clear(self) -> None:
        now = time.monotonic()
        with self._lock:
            playing = next((e.segment for e in self._buffer if isinstance(e, _Audio)), None)
            if playing is None and self.last_heard_at is not None and now - self.last_heard_at <= 2 * FRAME_MS / 1000:
                playing = self._last_played_segment
            # Those reached and waiting out their delay (never withheld), then every mark not
            # reached yet: Twilio echoes them all at once.
            delayed = [name for _, name in self._delayed_marks]
            self._delayed_marks.clear()
            unreached, self._deferred_marks = self._deferred_marks, []
            for entry in self._buffer:
                if isinstance(entry, _Mark):
                    unreached.append(entry.name)
                else:
                    entry.segment.cleared_ms += (len(entry.data) - entry.offset) / 8
            self.marks_reached.extend((now, name) for name in unreached)
            echoes = delayed + self._not_withheld(unreached)
            dropped = self._buffered_bytes / 8
            self._buffer.clear()
            self._buffered_bytes = 0
            self._rx_segment = None  # audio after a clear is another item's
            self.clears.append(ClearRecord(t=now, dropped_ms=dropped, marks_echoed=echoes, playing=playing,
                                           playing_heard_ms=playing.heard_ms if playing else 0.0))
        self._echo(echoes)

    def _not_withheld(self, names: list[str]) -> list[str]:
        withheld = [name for name in names if self.line.withholds(name)]
        self.marks_withheld.extend(withheld)
        return [name for name in names if name not in withheld] if withheld else names

    def _reached(self, names: list[str]) -> None:
        """Playout reached these marks, in order: echo them now, or once the line's delay is over.
        Under `_echo_lock`."""
        if not names:
            return
        now = time.monotonic()
        with self._lock:
            self.marks_reached.extend((now, name) for name in names)
            names = self._not_withheld(names)
            if self.line.delays_marks:
                for name in names:
                    due = max(now + next(self._mark_delays), self._delayed_marks[-1][0] if self._delayed_marks else 0)
                    self._delayed_marks.append((due, name))
                names = []
        if self.line.delays_marks:
            self._echo_wakeup.set()
        self._echo(names)

    def _echoer(self) -> None:
        """Echo each delayed mark when its time comes."""
        while not self.closed:
            self._echo_wakeup.clear()
            with self._lock:
                due = self._delayed_marks[0][0] if self._delayed_marks else None
            wait = None if due is None else due - time.monotonic()
            if wait is None or wait > 0:
                self._echo_wakeup.wait(wait)
                continue
            with self._echo_lock:
                with self._lock:
                    now = time.monotonic()
                    names = []
                    while self._delayed_marks and self._delayed_marks[0][0] <= now:
                        names.append(self._delayed_marks.popleft()[1])
                self._echo(names)

    def _echo(self, names: list[str]) -> None:
        for name in names:
            self.marks_echoed.append((time.monotonic(), name))
            try:
                self._send_json({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}})
            except (websocket.WebSocketException, OSError):
                return

    # --- playout ---

    def _playout(self) -> None:
        """Play one 20 ms frame per tick, ticks on a fixed schedule from `started_at`."""
        tick = 0
        while not self.closed:
            tick += 1
            delay = self.started_at + tick * FRAME_MS / 1000 - time.monotonic()
            if delay > 0:
                gevent.sleep(delay)
            if self.closed:
                return  # what was still buffered is never heard
            with self._echo_lock:
                self._reached(self._play_frame(time.monotonic()))

    def _play_frame(self, now: float) -> list[str]:
        """Take up to one frame from the buffer; return the marks playout reached."""
        with self._lock:
            echoes, self._deferred_marks = self._deferred_marks, []
            while self._buffer and isinstance(self._buffer[0], _Mark):  # reached when the last frame ended
                echoes.append(self._buffer.popleft().name)
            need = FRAME_BYTES
            while need and self._buffer:
                head = self._buffer[0]
                if isinstance(head, _Mark):  # inside this frame: reached when it has played
                    self._deferred_marks.append(self._buffer.popleft().name)
                    continue
                take = min(need, len(head.data) - head.offset)
                head.offset += take
                need -= take
                self._buffered_bytes -= take
                segment = head.segment
                segment.heard_ms += take / 8
                if segment.first_heard_at is None:
                    segment.first_heard_at = now
                segment.last_heard_at = now
                self._last_played_segment = segment
                if head.offset >= len(head.data):
                    self._buffer.popleft()
            played_ms = (FRAME_BYTES - need) / 8
            if played_ms:
                self.heard_ms += played_ms
                if self.first_heard_at is None:
                    self.first_heard_at = now
                self.last_heard_at = now
                self.playout_log.append((now, played_ms, self._last_played_segment.index))
        return echoes

    # --- what the caller heard ---

    @property
    def buffered_ms(self) -> float:
        return self._buffered_bytes / 8

    def echoed(self, name: str) -> bool:
        return any(n == name for _, n in self.marks_echoed)

    def segment_ending(self, mark: str) -> Segment | None:
        return next((s for s in self.segments if s.end_mark == mark), None)

    def segment_starting(self, mark: str) -> Segment | None:
        return next((s for s in self.segments if s.start_mark == mark), None)

    def gaps(self, min_ms: float = 40.0) -> list[tuple[float, float]]:
        """Silences inside the agent's speech: (start time, ms) between heard frames, at least `min_ms`."""
        found = []
        for (t1, ms1, _), (t2, _, _) in zip(self.playout_log, self.playout_log[1:]):
            gap = (t2 - t1) * 1000 - ms1
            if gap >= min_ms:
                found.append((t1 + ms1 / 1000, gap))
        return found

    # --- waits ---

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0, message: str = "condition") -> Any:
        return wait_for(predicate, timeout, message=message)

    def wait_heard(self, ms: float, timeout: float = 5.0) -> float:
        """Until the caller has heard `ms` of agent audio in all."""
        wait_for(lambda: self.heard_ms >= ms, timeout, message=lambda: f"{ms} ms heard (heard {self.heard_ms})")
        return self.heard_ms

    def wait_mark_echoed(self, name: str, timeout: float = 5.0) -> float:
        """Until mark `name` has been echoed; returns when it was."""
        wait_for(lambda: self.echoed(name), timeout, message=f"mark {name!r} echoed")
        return next(t for t, n in self.marks_echoed if n == name)

    def wait_clear(self, count: int = 1, timeout: float = 5.0) -> ClearRecord:
        wait_for(lambda: len(self.clears) >= count, timeout, message=f"{count} clear(s)")
        return self.clears[count - 1]

    def wait_quiet(self, quiet_ms: float = 300, timeout: float = 10.0) -> None:
        """Until the agent has spoken and then nothing has played for `quiet_ms`."""
        wait_for(lambda: self.last_heard_at is not None and not self._buffered_bytes
                 and time.monotonic() - self.last_heard_at >= quiet_ms / 1000,
                 timeout, message=f"{quiet_ms} ms of quiet after the agent spoke")

    def wait_closed(self, timeout: float = 5.0) -> int | None:
        """Until the socket is closed; returns the close code (None when dropped without one)."""
        wait_for(lambda: self.closed, timeout, message="the media socket to close")
        return self.close_code
