"""A lean Twilio caller for the benchmark: hundreds of calls in one process, well under a core.

`FakeTwilioCall` (tests/fakes/twilio_caller.py) runs three greenlets a call, JSON and
websocket-client framing per frame, and a playout tick per 20 ms. `LeanCall` keeps the
behaviour the benchmark measures with little work per frame:

- Sending: one shared `Ticker` greenlet sends every call's frame each 20 ms on a
  drift-free schedule, the calls spread over `slots` phases (as real calls' frames are
  not all in step). Each call's two media frames (silence, speech) are built once: a
  constant JSON message (no sequence numbers: the server ignores them), masked with a
  fixed key (the server does not check the key's randomness). Sends go straight to the
  non-blocking socket; a socket that will not take a frame gets a backlog that a flusher
  greenlet drains, so one slow socket never stalls the ticker (`send_stalls` counts it).
- Receiving: one greenlet per call reads the server's (unmasked) frames with the server's
  own codec (`services.ws_frames`). A media message is recognised by its prefix and its
  audio length is taken from the base64 length without decoding; only `mark` and `clear`
  are parsed as JSON.
- Playout is computed from time: the audio plays back to back from its arrival, so
  each frame extends `play_end` and heard = received - cleared - what is still ahead
  of `play_end`. A mark is echoed when playout reaches it (a loop timer per mark);
  `clear` drops the unplayed audio, echoes the pending marks at once and records what
  of the playing item had been heard. Audio counts as heard as it plays, continuously
  (FakeTwilioCall counts a whole frame when its tick starts it), so the server's
  truncate point, counted in whole frames, is 0-20 ms behind it, not a constant 20.
- Waits (`wait_heard`, `wait_quiet`, `wait_clear`) sleep until the time the answer can
  change, and the receiver wakes a waiter only when something it waits for arrives.
"""
from __future__ import annotations

import base64
import binascii
import json
import math
import socket
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping
from urllib.parse import urlsplit

import gevent
import gevent.event

from bench import ws_handshake
from bench.twilio_peer import FRAME_MS, SILENCE_FRAME, SPEECH_FRAME, TEST_ACCOUNT_SID, new_sid
from services import ws_frames
from services.ws_frames import OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, FrameDecoder, FrameProtocolError

FRAME_S = FRAME_MS / 1000
# A clear this soon after the last audio played still cuts that item (as FakeTwilioCall).
RECENT_S = 2 * FRAME_S
INF = float("inf")
FIXED_MASK = b"\x5a\x3c\xa5\xc3"


@dataclass(eq=False)
class Segment:
    """Agent audio between two marks, as received and as heard (the shape bench.calls reads)."""

    index: int
    start_mark: str | None
    end_mark: str | None = None
    received_ms: float = 0.0
    cleared_ms: float = 0.0
    first_received_at: float | None = None
    play_start: float | None = None  # when its first frame began to play
    play_end: float = 0.0  # when its last received frame ends playing
    first_arrival: int = 0  # its frames' arrival times: arrivals[first_arrival:last_arrival]
    last_arrival: int = 0

    def heard_ms_at(self, now: float) -> float:
        ahead = self.play_end - now
        return self.received_ms - self.cleared_ms - (ahead * 1000 if ahead > 0 else 0.0)


@dataclass
class ClearRecord:
    t: float
    dropped_ms: float
    marks_echoed: list[str]
    playing: Segment | None
    playing_heard_ms: float


@dataclass
class _Waiter:
    event: gevent.event.Event = field(default_factory=gevent.event.Event)
    received_ms: float = INF  # wake when this much audio has been received
    on_clear: bool = False


class Ticker:
    """Sends each registered call's next frame every 20 ms, calls spread over `slots` phases."""

    def __init__(self, slots: int = 20) -> None:
        self.slots = slots
        self._by_slot: list[list[LeanCall]] = [[] for _ in range(slots)]
        self._next_slot = 0
        self._greenlet: gevent.Greenlet | None = None

    def add(self, call: "LeanCall") -> None:
        self._by_slot[self._next_slot].append(call)
        call._slot = self._next_slot
        self._next_slot = (self._next_slot + 1) % self.slots
        if self._greenlet is None:
            self._greenlet = gevent.spawn(self._run)

    def remove(self, call: "LeanCall") -> None:
        members = self._by_slot[call._slot]
        if call in members:
            members.remove(call)

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill()
            self._greenlet = None

    def _run(self) -> None:
        step = FRAME_S / self.slots
        t0 = time.monotonic()
        k = 0
        monotonic, sleep = time.monotonic, gevent.sleep
        while True:
            delay = t0 + k * step - monotonic()
            if delay > 0:
                sleep(delay)  # late ticks run at once: frames are never skipped
            for call in self._by_slot[k % self.slots]:
                n = call.frames_sent
                try:
                    call._send(call._next_frame(n))
                except Exception as exc:  # noqa: BLE001 - one call's failure must not stop the others
                    call.greenlet_errors.append(f"ticker: {exc!r}")
                    gevent.spawn(self.remove, call)
                call.frames_sent = n + 1
            k += 1


class LeanCall:
    """One call's Media Stream for the benchmark. `start()`, then speak and wait; `stop()` hangs up."""

    def __init__(self, media_ws_url: str, call_sid: str, parameters: Mapping[str, str] | None = None,
                 ticker: Ticker | None = None, stream_sid: str | None = None, account_sid: str = TEST_ACCOUNT_SID,
                 connect_timeout: float = 5.0, headers: Mapping[str, str] | None = None) -> None:
        self.url = media_ws_url
        self.headers = dict(headers or {})  # on the upgrade request, e.g. X-Twilio-Signature
        self.call_sid = call_sid
        self.parameters = dict(parameters or {})
        self.stream_sid = stream_sid or new_sid("MZ")
        self.account_sid = account_sid
        self.connect_timeout = connect_timeout
        self.ticker = ticker or Ticker()
        self.started_at: float | None = None
        self.closed_at: float | None = None
        self.close_code: int | None = None
        self.close_reason = ""
        self.closed_by_server = False
        # Caller side.
        self.frames_sent = 0
        self._speak_until_frame = 0
        self.send_stalls = 0
        sid = self.stream_sid
        self._silence_frame = self._media_frame(SILENCE_FRAME)
        self._speech_frame = self._media_frame(SPEECH_FRAME)
        # Server side.
        self._media_prefix = ('{"event":"media","streamSid":"' + sid + '","media":{"payload":"').encode()
        self.segments: list[Segment] = []
        self.clears: list[ClearRecord] = []
        self.marks_received: list[tuple[float, str]] = []
        self.marks_echoed: list[tuple[float, str]] = []
        self.arrivals: list[float] = []  # arrival time of every media frame (segments index into it)
        self.protocol_errors: list[str] = []
        self.greenlet_errors: list[str] = []
        self.media_received = 0
        self.received_ms = 0.0
        self.cleared_ms = 0.0
        self.first_audio_received_at: float | None = None
        self.unplayed_at_close_ms: float | None = None
        self._play_end = 0.0
        self._rx_segment: Segment | None = None
        self._last_mark: str | None = None
        self._pending_marks: list[tuple[float, str]] = []  # (due, name), dues in order
        self._mark_timer = None
        self._mark_timer_at = INF
        self._waiter: _Waiter | None = None
        self._sock: socket.socket | None = None
        self._raw = None  # the non-blocking socket under gevent's
        self._backlog: list[bytes] | None = None
        self._close_sent = False
        self._closed_event = gevent.event.Event()
        self._receiver: gevent.Greenlet | None = None
        self._slot = 0

    def _next_frame(self, n: int) -> bytes:
        """The `n`-th frame the ticker sends (0-based)."""
        return self._speech_frame if n < self._speak_until_frame else self._silence_frame

    def _media_frame(self, audio: bytes) -> bytes:
        return self._frame(('{"event":"media","streamSid":"' + self.stream_sid + '","media":{"track":"inbound",'
                            '"payload":"' + base64.b64encode(audio).decode("ascii") + '"}}').encode())

    # --- lifecycle ---

    def start(self) -> "LeanCall":
        parts = urlsplit(self.url)
        host, port = parts.hostname, parts.port or 80
        sock = socket.create_connection((host, port), timeout=self.connect_timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        rest = ws_handshake.client_handshake(sock, host, port, parts.path + (f"?{parts.query}" if parts.query else ""),
                                             self.headers)
        sock.settimeout(None)
        self._sock, self._raw = sock, sock._sock  # gevent keeps the real socket non-blocking
        self._send_json({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        self._send_json({"event": "start", "sequenceNumber": "1", "streamSid": self.stream_sid, "start": {
            "streamSid": self.stream_sid, "accountSid": self.account_sid, "callSid": self.call_sid,
            "tracks": ["inbound"], "customParameters": self.parameters,
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}})
        self.started_at = time.monotonic()
        self._receiver = gevent.spawn(self._guarded_receive, rest)
        self.ticker.add(self)
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Hang up as Twilio does: a `stop` message, then a clean close."""
        self.ticker.remove(self)
        if self._sock is None:
            return
        if not self.closed and not self._close_sent:
            self._send_json({"event": "stop", "streamSid": self.stream_sid,
                             "stop": {"accountSid": self.account_sid, "callSid": self.call_sid}})
            self._close_sent = True
            self._send(ws_frames.close_frame(1000, key=FIXED_MASK), closing=True)
            if not self._closed_event.wait(timeout):
                self.greenlet_errors.append(f"the server did not answer the close within {timeout:.1f}s")
        self._halt()

    def _halt(self) -> None:
        if self._receiver is not None and not self._receiver.dead and self._receiver is not gevent.getcurrent():
            self._receiver.kill(block=True, timeout=1)
        if self._mark_timer is not None:
            self._mark_timer.close()
            self._mark_timer = None
        try:
            self._sock.close()
        except OSError:
            pass

    @property
    def closed(self) -> bool:
        return self.closed_at is not None

    # --- sending (never blocks: callable from the ticker and from loop callbacks) ---

    def _send(self, data: bytes, closing: bool = False) -> bool:
        if self._close_sent and not closing:
            return False
        if self._backlog is not None:
            self._backlog.append(data)
            return True
        try:
            n = self._raw.send(data)
        except BlockingIOError:
            n = 0
        except OSError:
            return False
        if n < len(data):
            self.send_stalls += 1
            self._backlog = [data[n:]]
            gevent.spawn(self._flush)
        return True

    def _flush(self) -> None:
        try:
            while self._backlog:
                data, self._backlog[:] = b"".join(self._backlog), []
                self._sock.sendall(data)
        except OSError:
            pass
        finally:
            self._backlog = None

    def _send_json(self, message: dict) -> bool:
        return self._send(self._frame(json.dumps(message, separators=(",", ":")).encode()))

    @staticmethod
    def _frame(payload: bytes, opcode: int = OP_TEXT) -> bytes:
        return ws_frames.encode(opcode, payload, FIXED_MASK)

    def speak(self, ms: int) -> None:
        """Send speech frames for `ms` from the next frame on (extends speech already under way)."""
        self._speak_until_frame = max(self._speak_until_frame, self.frames_sent) + math.ceil(ms / FRAME_MS)

    @property
    def speaking(self) -> bool:
        return self.frames_sent < self._speak_until_frame

    # --- receiving ---

    def _guarded_receive(self, rest: bytes) -> None:
        try:
            self._receive(rest)
        except gevent.GreenletExit:
            raise
        except Exception as exc:  # noqa: BLE001 - the caller's own failure must show in the figures
            self.greenlet_errors.append(f"receiver: {exc!r}")
            self._on_closed(None, "")

    def _receive(self, rest: bytes) -> None:
        recv = self._sock.recv
        decoder = FrameDecoder(masked=False)  # a server's frames
        feed, next_message = decoder.feed, decoder.next
        prefix = self._media_prefix
        plen = len(prefix) + 3  # the prefix and the closing '"}}'
        monotonic = time.monotonic
        on_media = self._on_media
        now = monotonic()
        data = rest
        while True:
            feed(data)
            while True:
                try:
                    message = next_message()
                except FrameProtocolError as exc:
                    self._protocol_error(f"bad frame from the server: {exc}")
                    self._on_closed(None, "")
                    return
                if message is None:
                    break
                op, payload = message
                if op == OP_TEXT and payload.startswith(prefix) and payload.endswith(b'"}}'):
                    on_media(now, (len(payload) - plen) // 4 * 3 - (payload[-4] == 61) - (payload[-5] == 61))
                elif self._on_message(now, op, payload):
                    return
            try:
                data = recv(262144)
            except OSError:
                data = b""
            if not data:
                self._on_closed(None, "")  # no close frame: the connection just went away
                return
            now = monotonic()

    def _on_message(self, now: float, op: int, payload: bytes) -> bool:
        """Anything but a media message in the expected shape; True when the stream is over."""
        if op == OP_CLOSE:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            if not self._close_sent:
                self._close_sent = True
                self.closed_by_server = True
                self._send(ws_frames.close_frame(code if code != 1005 else 1000, key=FIXED_MASK), closing=True)
            self._on_closed(code, payload[2:].decode("utf-8", "replace"))
            return True
        if op == OP_PING:
            self._send(self._frame(payload, OP_PONG))
            return False
        if op == OP_PONG:
            return False
        if op != OP_TEXT:
            self._protocol_error(f"message with opcode {op} (Twilio takes JSON text)")
            return False
        text = payload.decode("utf-8", "replace")
        try:
            message = json.loads(text)
        except ValueError:
            self._protocol_error(f"not JSON: {text[:80]!r}")
            return False
        if not isinstance(message, dict):
            self._protocol_error(f"not a JSON object: {text[:80]!r}")
            return False
        event = message.get("event")
        if event not in ("media", "mark", "clear"):
            self._protocol_error(f"unknown event {event!r}")
        elif message.get("streamSid") != self.stream_sid:
            self._protocol_error(f"{event} with streamSid {message.get('streamSid')!r}, not {self.stream_sid!r}")
        elif event == "media":  # another shape than the fast path expects: decode it
            media = message.get("media")
            payload_b64 = media.get("payload") if isinstance(media, dict) else None
            try:
                audio = base64.b64decode(payload_b64, validate=True) if isinstance(payload_b64, str) else b""
            except (binascii.Error, ValueError):
                audio = b""
            if audio:
                self._on_media(now, len(audio))
            else:
                self._protocol_error("media without a base64 payload")
        elif event == "mark":
            mark = message.get("mark")
            name = mark.get("name") if isinstance(mark, dict) else None
            if isinstance(name, str) and name:
                self._on_mark(now, name)
            else:
                self._protocol_error(f"mark without a name: {text[:80]!r}")
        else:
            self._on_clear(now)
        return False

    def _protocol_error(self, what: str) -> None:
        self.protocol_errors.append(what)

    def _on_closed(self, code: int | None, reason: str) -> None:
        if self.closed_at is not None:
            return
        now = time.monotonic()
        self.unplayed_at_close_ms = max(0.0, self._play_end - now) * 1000
        self.close_code, self.close_reason = code, reason
        self.closed_at = now
        self.ticker.remove(self)
        self._closed_event.set()
        if self._waiter is not None:
            self._waiter.event.set()

    def _on_media(self, now: float, nbytes: int) -> None:
        ms = nbytes / 8
        segment = self._rx_segment
        if segment is None:
            segment = self._rx_segment = Segment(index=len(self.segments), start_mark=self._last_mark,
                                                 first_arrival=len(self.arrivals))
            self.segments.append(segment)
            segment.first_received_at = now
            if self.first_audio_received_at is None:
                self.first_audio_received_at = now
        play_end = self._play_end
        if play_end < now:
            play_end = now  # idle or an underrun: this frame plays from its arrival
        if segment.play_start is None:
            segment.play_start = play_end
        play_end += ms / 1000
        self._play_end = segment.play_end = play_end
        segment.received_ms += ms
        self.received_ms += ms
        self.media_received += 1
        self.arrivals.append(now)
        segment.last_arrival = len(self.arrivals)
        waiter = self._waiter
        if waiter is not None and self.received_ms >= waiter.received_ms:
            waiter.event.set()

    def _on_mark(self, now: float, name: str) -> None:
        self.marks_received.append((now, name))
        if self._rx_segment is not None:
            self._rx_segment.end_mark = name
            self._rx_segment = None
        self._last_mark = name
        due = self._play_end
        if due <= now and not self._pending_marks:
            self._echo([name])  # nothing left to play before it
            return
        self._pending_marks.append((due, name))
        self._arm_mark_timer(due)

    def _arm_mark_timer(self, due: float) -> None:
        if self._mark_timer is not None and self._mark_timer_at <= due:
            return
        if self._mark_timer is not None:
            self._mark_timer.close()
        loop = gevent.get_hub().loop
        self._mark_timer = loop.timer(max(0.0, due - time.monotonic()))
        self._mark_timer_at = due
        self._mark_timer.start(self._marks_due)

    def _marks_due(self) -> None:
        """Loop callback: echo the marks playout has reached; re-arm for the next one."""
        self._mark_timer.close()
        self._mark_timer, self._mark_timer_at = None, INF
        now = time.monotonic()
        names = []
        while self._pending_marks and self._pending_marks[0][0] <= now + 0.0005:
            names.append(self._pending_marks.pop(0)[1])
        if names:
            self._echo(names)
        if self._pending_marks:
            self._arm_mark_timer(self._pending_marks[0][0])

    def _on_clear(self, now: float) -> None:
        playing = None
        for segment in reversed(self.segments):
            if segment.play_start is not None and segment.play_start <= now:
                if segment.play_end > now or now - segment.play_end <= RECENT_S:
                    playing = segment
                break
        heard = playing.heard_ms_at(now) if playing is not None else 0.0
        for segment in reversed(self.segments):
            if segment.play_end <= now:
                break
            cut = segment.play_end - max(now, segment.play_start)
            segment.cleared_ms += cut * 1000
            segment.play_end = now
        dropped = max(0.0, self._play_end - now) * 1000
        self.cleared_ms += dropped
        self._play_end = now
        self._rx_segment = None  # audio after a clear is another item's
        echoes = [name for _, name in self._pending_marks]
        self._pending_marks.clear()
        self.clears.append(ClearRecord(t=now, dropped_ms=dropped, marks_echoed=echoes, playing=playing,
                                       playing_heard_ms=heard))
        self._echo(echoes)
        if self._waiter is not None and self._waiter.on_clear:
            self._waiter.event.set()

    def _echo(self, names: list[str]) -> None:
        now = time.monotonic()
        for name in names:
            self.marks_echoed.append((now, name))
            self._send_json({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}})

    # --- what the caller heard ---

    @property
    def heard_ms(self) -> float:
        ahead = self._play_end - time.monotonic()
        return self.received_ms - self.cleared_ms - (ahead * 1000 if ahead > 0 else 0.0)

    @property
    def buffered_ms(self) -> float:
        return max(0.0, self._play_end - time.monotonic()) * 1000

    def arrival_runs(self) -> list[list[float]]:
        """Media arrival times, one list per segment (for pacing jitter)."""
        return [self.arrivals[s.first_arrival:s.last_arrival] for s in self.segments]

    # --- waits ---

    def _wait(self, check: Callable[[float, _Waiter], float | bool | None], timeout: float, what: Callable[[], str]):
        """Until check(now, waiter) is True. Otherwise it returns when to look again (seconds), or
        None to sleep until the receiver wakes the waiter (it sets the waiter's conditions)."""
        deadline = time.monotonic() + timeout
        waiter = self._waiter = _Waiter()
        try:
            while True:
                now = time.monotonic()
                waiter.received_ms, waiter.on_clear = INF, False
                again = check(now, waiter)
                if again is True:
                    return
                if self.closed:
                    raise AssertionError(f"the media socket closed while waiting for {what()}")
                left = deadline - now
                if left <= 0:
                    raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what()}")
                waiter.event.clear()
                waiter.event.wait(left if again is None else min(max(again, 0.0005), left))
        finally:
            self._waiter = None

    def wait_heard(self, ms: float, timeout: float = 5.0) -> float:
        """Until the caller has heard `ms` of agent audio in all."""
        def check(now, waiter):
            have = self.received_ms - self.cleared_ms  # heard once it has all played
            if have >= ms:
                reached_at = self._play_end - (have - ms) / 1000
                return True if reached_at <= now else reached_at - now
            waiter.received_ms = self.received_ms + (ms - have)
            waiter.on_clear = True
            return None

        self._wait(check, timeout, lambda: f"{ms} ms heard (heard {self.heard_ms:.0f})")
        return self.heard_ms

    def wait_quiet(self, quiet_ms: float = 300, timeout: float = 10.0) -> None:
        """Until the agent has spoken and then nothing has played for `quiet_ms`."""
        def check(now, waiter):
            if self.first_audio_received_at is None:
                waiter.received_ms = 0.001
                return None
            quiet_at = self._play_end + quiet_ms / 1000
            return True if now >= quiet_at else quiet_at - now

        self._wait(check, timeout, lambda: f"{quiet_ms} ms of quiet after the agent spoke")

    def wait_clear(self, count: int = 1, timeout: float = 5.0) -> ClearRecord:
        def check(now, waiter):
            if len(self.clears) >= count:
                return True
            waiter.on_clear = True
            return None

        self._wait(check, timeout, lambda: f"{count} clear(s)")
        return self.clears[count - 1]
