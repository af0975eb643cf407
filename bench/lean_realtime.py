"""A lean fake Realtime API (GA events) for the benchmark, in its own process.

`python -m bench.lean_realtime --port P --stats FILE [--first-byte-ms X] [--greeting-ms G] [--audio-ms Y]
[--drop-share S --seed N] [--caller-transcripts JSON] [--transcript-delay-ms D]` serves until SIGTERM, then writes {"connections": [one record per
connection], "loop_lag_ms": {...}} to FILE.

`--caller-transcripts JSON`: what the caller's turns are transcribed as, in order on each
connection (a JSON list; once it runs out, "שלום"); `--transcript-delay-ms`: how long after the
commit each transcript comes (the real API's transcription takes a while).

`--drop-share`: that share of the calls has its connection cut (TCP reset: SO_LINGER 0, then
close) halfway through the audio of its response number 1, 2 or 3, as a network failure would.
The calls are picked from the seed, evenly spread over the connections as they come; a
connection the server opened again to resume a call (the conversation so far sent as items
before its first response) is never cut, so a call loses its session once at most.

It speaks what the server uses of the Realtime API, in the shapes `bench.realtime_peer`
builds (session.created/updated, response.created, output items, audio and transcript
deltas in one burst after the first-byte delay, response.done with usage, server VAD
with speech_started/stopped, committed and the caller's transcription, cancel, truncate,
item create), but each appended frame costs almost nothing: a raw gevent StreamServer,
the server's own frame codec (`services.ws_frames`), and `input_audio_buffer.append`
recognised by comparing the whole unmasked message with the two payloads the lean caller
sends (silence, speech). Only the rare events are parsed as JSON and validated with
`services.realtime_protocol`.

One greenlet per connection (its reader) and one per response (the first-byte wait).
"""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import gc  # noqa: E402
import base64  # noqa: E402
import binascii  # noqa: E402
import copy  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import random  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import struct  # noqa: E402
import time  # noqa: E402
from functools import lru_cache  # noqa: E402
from urllib.parse import parse_qs, urlsplit  # noqa: E402

import gevent  # noqa: E402
import gevent.event  # noqa: E402
import gevent.lock  # noqa: E402
import gevent.queue  # noqa: E402
from gevent.server import StreamServer  # noqa: E402

from bench import ws_handshake  # noqa: E402
from bench.loop_lag import LoopLag  # noqa: E402
from bench.realtime_peer import (DEFAULT_PREFIX_PADDING_MS, DEFAULT_SILENCE_MS, PATH, SILENT_BYTES,  # noqa: E402
                                 agent_audio_byte, caller_item, default_session, merge_session, message_item,
                                 new_id, response_object, text_pieces, token_usage, transcribes,
                                 transcription_completed)
from bench.twilio_peer import SILENCE_FRAME, SPEECH_FRAME, read_caller_tag  # noqa: E402
from services import ws_frames  # noqa: E402
from services.realtime_protocol import ProtocolError, validate_client_event  # noqa: E402
from services.ws_frames import OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, FrameDecoder, FrameProtocolError  # noqa: E402

log = logging.getLogger("lean_realtime")

APPEND_PREFIX = b'{"type":"input_audio_buffer.append","audio":"'
APPEND_SUFFIX = b'"}'
SILENCE_MSG = APPEND_PREFIX + base64.b64encode(SILENCE_FRAME) + APPEND_SUFFIX
SPEECH_MSG = APPEND_PREFIX + base64.b64encode(SPEECH_FRAME) + APPEND_SUFFIX
FRAME_BYTES = len(SILENCE_FRAME)
CHUNK_MS = 100
GREETING_TEXT = "שלום, הגעתם לעסק הבדיקה, איך אפשר לעזור?"
REPLY_TEXT = "תשובה לדוגמה מהסוכן, עם כמה מילים בעברית."
CALLER_TRANSCRIPT = "שלום"


@lru_cache(maxsize=None)
def audio_b64(byte: int, ms: int) -> str:
    return base64.b64encode(bytes([byte]) * (ms * 8)).decode("ascii")


@lru_cache(maxsize=None)
def pieces(text: str, n: int) -> tuple[str, ...]:
    return tuple(text_pieces(text, n))


def dumps(event: dict) -> bytes:
    return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()


class Response:
    __slots__ = ("id", "item_id", "index", "text", "audio_ms", "created_at", "first_audio_at", "status",
                 "stage", "finished", "audio_ms_sent", "transcript_sent", "instructions", "notice")

    def __init__(self, index: int, text: str, audio_ms: int, instructions: str | None,
                 notice: str | None = None) -> None:
        self.id, self.item_id, self.index = new_id("resp"), new_id("item"), index
        self.text, self.audio_ms, self.instructions = text, audio_ms, instructions
        self.notice = notice  # the server's system item just before it: what the response is for
        self.created_at = time.monotonic()
        self.first_audio_at: float | None = None
        self.status = "in_progress"
        self.stage = "created"  # created → item → done
        self.finished = False
        self.audio_ms_sent = 0
        self.transcript_sent = ""


class Connection:
    """One server websocket. The reader greenlet owns the VAD and the script position;
    `_wlock` orders writes (the reader and the response greenlets both send)."""

    numbers = itertools.count(1)

    def __init__(self, fake: "LeanRealtime", sock, target: str, headers: dict[str, str]) -> None:
        self.fake = fake
        self.sock = sock
        self.no = next(self.numbers)
        self._eid = itertools.count(1)
        self._wlock = gevent.lock.Semaphore()
        query = {k: v[0] for k, v in parse_qs(urlsplit(target).query).items()}
        self.session = default_session(query.get("model") or "gpt-realtime")
        self.headers = headers
        self.closed = False
        # VAD state and input audio.
        self.input_ms = 0
        self._td: dict | None = self._turn_detection()
        self._speech_item: str | None = None
        self._speech_start_ms = 0
        self._silence_ms = 0
        self._last_item_id: str | None = None
        # Records.
        self.speech_started: list[float] = []
        self.responses: list[Response] = []
        self.active: Response | None = None
        self.truncates: list[dict] = []
        self.invalid_events = 0
        self.double_responses = 0
        self.errors: list[str] = []
        self.appended_frames = 0
        self.caller_tag: int | None = None  # the call it carries, when the caller tags its first frames
        self.speech_stopped: list[float] = []
        # Cuts: a connection that resumes a call is told the conversation before its first response.
        self.resumed = False
        self.drop_at: int | None = None  # the response during which to cut the connection
        self.dropped_at: float | None = None
        self._notice: str | None = None  # the last system item since the last response
        self._turns = 0  # the caller's turns committed so far

    # --- writing ---

    def _event_id(self) -> str:
        return f"event_{self.no}_{next(self._eid)}"

    def frame(self, event: dict) -> bytes:
        event = {"type": event["type"], "event_id": self._event_id(), **event}
        return ws_frames.encode(OP_TEXT, dumps(event))

    def send(self, *frames: bytes) -> None:
        data = frames[0] if len(frames) == 1 else b"".join(frames)
        with self._wlock:
            self.sock.sendall(data)

    def send_event(self, event: dict) -> None:
        self.send(self.frame(event))

    def send_error(self, code: str, message: str, client_event_id: str | None = None, param: str | None = None):
        self.errors.append(code)
        self.send_event({"type": "error", "error": {"type": "invalid_request_error", "code": code,
                                                    "message": message, "param": param, "event_id": client_event_id}})

    # --- reading ---

    def serve(self, rest: bytes) -> None:
        self.send_event({"type": "session.created", "session": copy.deepcopy(self.session)})
        recv = self.sock.recv
        decoder = FrameDecoder()  # the server under test is the client here: its frames are masked
        feed, next_message = decoder.feed, decoder.next
        handle, late = self._handle_message, None
        if self.fake.latency_ms:
            handle, late = self._late_handler(self.fake.latency_ms / 1000)
        data = rest
        try:
            while True:
                feed(data)
                while True:
                    try:
                        message = next_message()
                    except FrameProtocolError as exc:
                        self._invalid(None, str(exc))
                        self.close(exc.code, str(exc))
                        return
                    if message is None:
                        break
                    if not handle(*message):
                        return
                data = recv(262144)
                if not data:
                    return
        finally:
            if late is not None:
                late.put(None)

    def _late_handler(self, delay_s: float):
        """Each message handled `delay_s` after it came, in order: a distant service's one-way
        latency (its answers then reach the server a round trip after the request left)."""
        queue: gevent.queue.Queue = gevent.queue.Queue()

        def work() -> None:
            while (item := queue.get()) is not None:
                due, op, payload = item
                gevent.sleep(max(0.0, due - time.monotonic()))
                if not self._handle_message(op, payload):
                    return

        gevent.spawn(work)
        return (lambda op, payload: queue.put((time.monotonic() + delay_s, op, payload)) or True), queue

    def _handle_message(self, op: int, payload: bytes) -> bool:
        """One message from the server; False when the connection ends."""
        if op == OP_TEXT:
            if payload == SILENCE_MSG:
                self._on_audio(FRAME_BYTES, False)
            elif payload == SPEECH_MSG:
                self._on_audio(FRAME_BYTES, True)
            else:
                self._on_text(payload)
        elif op == OP_CLOSE:
            self.close(int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1000)
            return False
        elif op == OP_PING:
            self.send(ws_frames.encode(OP_PONG, payload))
        elif op != OP_PONG:  # binary: the server sends none
            self._invalid(None, f"message with opcode {op}")
        return True

    def close(self, code: int = 1000, reason: str = "") -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.send(ws_frames.close_frame(code, reason))
        except OSError:
            pass

    def drop(self) -> None:
        """Cut the TCP connection without a close frame: with SO_LINGER 0, close sends a reset
        (the reader's recv then fails and its handler ends)."""
        with self._wlock:  # not in the middle of another greenlet's write
            self.dropped_at = time.monotonic()
            self.closed = True
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.sock.close()
            except OSError:
                pass

    def _invalid(self, event, reason: str, client_event_id: str | None = None) -> None:
        log.warning("invalid client event: %s", reason)
        self.invalid_events += 1
        code = "unknown_parameter" if "does not define" in reason else "invalid_value"
        self.send_error(code, reason, client_event_id)

    def _on_text(self, payload: bytes) -> None:
        if payload.startswith(APPEND_PREFIX) and payload.endswith(APPEND_SUFFIX):
            audio_b64 = payload[len(APPEND_PREFIX):-len(APPEND_SUFFIX)]
            if b'"' not in audio_b64:  # the server's own shape, other audio: decode it
                try:
                    audio = base64.b64decode(audio_b64, validate=True)
                except (binascii.Error, ValueError) as exc:
                    self._invalid(None, f"audio is not base64: {exc}")
                    return
                if self.caller_tag is None:
                    self.caller_tag = read_caller_tag(audio)
                self._on_audio(len(audio), bool(audio.strip(SILENT_BYTES)))
                return
        try:
            event = json.loads(payload)
        except ValueError as exc:
            self._invalid(None, f"not JSON: {exc}")
            return
        if not isinstance(event, dict):
            self._invalid(None, "not a JSON object")
            return
        try:
            validate_client_event(event)
        except ProtocolError as exc:
            self._invalid(event, str(exc), event.get("event_id"))
            return
        handler = self._HANDLERS.get(event["type"])
        if handler is not None:
            handler(self, event)

    # --- input audio and VAD ---

    def _turn_detection(self) -> dict | None:
        td = ((self.session.get("audio") or {}).get("input") or {}).get("turn_detection")
        return td if isinstance(td, dict) and td.get("type") in ("server_vad", "semantic_vad") else None

    def _on_audio(self, nbytes: int, speech: bool) -> None:
        self.appended_frames += 1
        start_ms = self.input_ms
        self.input_ms += nbytes // 8
        td = self._td
        if td is None:
            return
        if speech:
            self._silence_ms = 0
            if self._speech_item is None:
                self._speech_item = new_id("item")
                padding = int(td.get("prefix_padding_ms") or DEFAULT_PREFIX_PADDING_MS)
                self._speech_start_ms = max(0, start_ms - padding)
                self.speech_started.append(time.monotonic())
                self.send_event({"type": "input_audio_buffer.speech_started", "audio_start_ms": self._speech_start_ms,
                                 "item_id": self._speech_item})
                if td.get("interrupt_response", True) and self.active is not None:
                    self.send(*self._finish(self.active, "cancelled"))  # as the API does unless told not to
        elif self._speech_item is not None:
            self._silence_ms += nbytes // 8
            if self._silence_ms >= int(td.get("silence_duration_ms") or DEFAULT_SILENCE_MS):
                item_id, self._speech_item = self._speech_item, None
                self.speech_stopped.append(time.monotonic())
                self.send_event({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": self.input_ms,
                                 "item_id": item_id})
                self._commit(item_id)
                if td.get("create_response", True):
                    self._on_response_create({})  # the API answers a turn itself unless told not to

    def _commit(self, item_id: str) -> None:
        previous, self._last_item_id = self._last_item_id, item_id
        item = caller_item(item_id)
        frames = [self.frame({"type": "input_audio_buffer.committed", "item_id": item_id,
                              "previous_item_id": previous}),
                  self.frame({"type": "conversation.item.added", "item": item, "previous_item_id": previous}),
                  self.frame({"type": "conversation.item.done", "item": item, "previous_item_id": previous})]
        if transcribes(self.session):
            said = self.fake.caller_transcripts
            text = said[self._turns] if self._turns < len(said) else CALLER_TRANSCRIPT
            self._turns += 1
            transcript = self.frame(transcription_completed(item_id, text))
            if self.fake.transcript_delay_ms:
                gevent.spawn_later(self.fake.transcript_delay_ms / 1000, self._send_late, transcript)
            else:
                frames.append(transcript)
        self.send(*frames)

    def _send_late(self, frame: bytes) -> None:
        if not self.closed:
            try:
                self.send(frame)
            except OSError:
                pass

    def _on_append_event(self, event: dict) -> None:
        """An append in another shape than the server's usual one (with an event_id, say)."""
        try:
            audio = base64.b64decode(event["audio"], validate=True)
        except (binascii.Error, ValueError) as exc:
            self._invalid(event, f"audio is not base64: {exc}", event.get("event_id"))
            return
        if self.caller_tag is None:
            self.caller_tag = read_caller_tag(audio)
        self._on_audio(len(audio), bool(audio.strip(SILENT_BYTES)))

    def _on_input_clear(self, event: dict) -> None:
        self._speech_item = None
        self._silence_ms = 0
        self.send_event({"type": "input_audio_buffer.cleared"})

    def _on_input_commit(self, event: dict) -> None:
        item_id, self._speech_item = self._speech_item or new_id("item"), None
        self._commit(item_id)

    # --- session ---

    def _on_session_update(self, event: dict) -> None:
        self.session = merge_session(self.session, event["session"])
        self._td = self._turn_detection()
        self.send_event({"type": "session.updated", "session": copy.deepcopy(self.session)})

    # --- responses ---

    def _usage(self, run: Response) -> dict:
        return token_usage(run.instructions or self.session.get("instructions") or "", self.input_ms,
                           len(self.responses) > 1, run.audio_ms_sent, run.transcript_sent)

    def _on_response_create(self, event: dict) -> None:
        if self.active is not None:
            self.double_responses += 1
            self.send_error("conversation_already_has_active_response",
                            f"Conversation already has an active response in progress: {self.active.id}. "
                            "Wait until the response is finished before creating a new one.", event.get("event_id"))
            return
        index = len(self.responses)
        if index == 0 and not self.resumed:
            self.drop_at = self.fake.pick_drop()
        text, ms = (GREETING_TEXT, self.fake.greeting_ms) if index == 0 else (REPLY_TEXT, self.fake.audio_ms)
        run = Response(index, text, ms, (event.get("response") or {}).get("instructions"), self._notice)
        self._notice = None
        self.responses.append(run)
        self.active = run
        item = message_item(run, "in_progress", with_content=False)
        self.send(self.frame({"type": "response.created", "response": response_object(self.session, run, "in_progress", [])}),
                  self.frame({"type": "response.output_item.added", "response_id": run.id, "output_index": 0,
                              "item": item}),
                  self.frame({"type": "conversation.item.added", "item": item, "previous_item_id": self._last_item_id}),
                  self.frame({"type": "response.content_part.added", "response_id": run.id, "item_id": run.item_id,
                              "output_index": 0, "content_index": 0, "part": {"type": "audio", "transcript": ""}}))
        self._last_item_id = run.item_id
        run.stage = "item"
        gevent.spawn_later(self.fake.first_byte_ms / 1000, self._burst, run)

    def _burst(self, run: Response) -> None:
        """The response's audio, a 100 ms delta (and its transcript piece) at a time as fast as the
        socket takes it (as FakeRealtime with speed=None: faster than real time), then its end."""
        n = math.ceil(run.audio_ms / CHUNK_MS)
        texts = pieces(run.text, n)
        head = (f'{{"type":"response.output_audio.delta","event_id":"event_{self.no}_%d","response_id":"{run.id}",'
                f'"item_id":"{run.item_id}","output_index":0,"content_index":0,"delta":"')
        byte = agent_audio_byte(run.index)
        try:
            for k in range(n):
                if run.finished or self.closed:
                    return
                if run.index == self.drop_at and k == n // 2:
                    run.status = "dropped"
                    self.drop()
                    return
                ms = min(CHUNK_MS, run.audio_ms - run.audio_ms_sent)
                frames = [ws_frames.encode(OP_TEXT, (head % next(self._eid) + audio_b64(byte, ms) + '"}').encode())]
                if texts[k]:
                    frames.append(self.frame({"type": "response.output_audio_transcript.delta", "response_id": run.id,
                                              "item_id": run.item_id, "output_index": 0, "content_index": 0,
                                              "delta": texts[k]}))
                if run.first_audio_at is None:
                    run.first_audio_at = time.monotonic()
                self.send(*frames)
                run.audio_ms_sent += ms
                run.transcript_sent += texts[k]
                gevent.sleep(0)  # let the reader take a cancel between chunks
            if not run.finished:
                run.transcript_sent = run.text
                self.send(*self._finish(run, "completed"))
        except OSError:
            pass

    def _finish(self, run: Response, status: str) -> list[bytes]:
        """The tail of an audio response, as the API sends it on completion and on cancel."""
        frames, output = [], []
        if run.stage == "item":
            base = {"response_id": run.id, "item_id": run.item_id, "output_index": 0, "content_index": 0}
            item = message_item(run, "completed" if status == "completed" else "incomplete", with_content=True)
            frames += [self.frame({"type": "response.output_audio.done", **base}),
                       self.frame({"type": "response.output_audio_transcript.done", **base,
                                   "transcript": run.transcript_sent}),
                       self.frame({"type": "response.content_part.done", **base,
                                   "part": {"type": "audio", "transcript": run.transcript_sent}}),
                       self.frame({"type": "response.output_item.done", "response_id": run.id, "output_index": 0,
                                   "item": item}),
                       self.frame({"type": "conversation.item.done", "item": item})]
            output = [item]
        run.stage = "done"
        run.finished = True
        run.status = status
        if self.active is run:
            self.active = None
        frames.append(self.frame({"type": "response.done",
                                  "response": response_object(self.session, run, status, output, self._usage(run))}))
        return frames

    def _on_response_cancel(self, event: dict) -> None:
        wanted = event.get("response_id")
        run = self.active
        if run is None or (wanted and wanted != run.id):
            self.send_error("response_cancel_not_active", "Cancellation failed: no active response found",
                            event.get("event_id"))
            return
        self.send(*self._finish(run, "cancelled"))

    # --- conversation items ---

    def _on_truncate(self, event: dict) -> None:
        item_id, end_ms = event["item_id"], int(event["audio_end_ms"])
        self.truncates.append({"t": time.monotonic(), "item_id": item_id, "audio_end_ms": end_ms})
        run = next((r for r in self.responses if r.item_id == item_id), None)
        error = None
        if run is None:
            error = f"Item with item_id {item_id} not found"
        elif end_ms > run.audio_ms_sent:
            error = f"Audio content of {run.audio_ms_sent}ms is already shorter than {end_ms}ms"
        if error:
            self.send_error("invalid_value", error, event.get("event_id"), param="audio_end_ms")
            return
        self.send_event({"type": "conversation.item.truncated", "item_id": item_id, "content_index": 0,
                         "audio_end_ms": end_ms})

    def _on_item_create(self, event: dict) -> None:
        role = event["item"].get("role")
        if not self.responses and role in ("user", "assistant"):
            self.resumed = True  # the conversation so far: a resumed call
        if role == "system":
            self._notice = "".join(part.get("text", "") for part in event["item"].get("content") or [])[:80]
        item = {"id": new_id("item"), "object": "realtime.item", "status": "completed", **event["item"]}
        previous = event.get("previous_item_id") or self._last_item_id
        self._last_item_id = item["id"]
        self.send(self.frame({"type": "conversation.item.added", "item": item, "previous_item_id": previous}),
                  self.frame({"type": "conversation.item.done", "item": item, "previous_item_id": previous}))

    _HANDLERS = {
        "session.update": _on_session_update,
        "input_audio_buffer.append": _on_append_event,
        "input_audio_buffer.clear": _on_input_clear,
        "input_audio_buffer.commit": _on_input_commit,
        "response.create": _on_response_create,
        "response.cancel": _on_response_cancel,
        "conversation.item.truncate": _on_truncate,
        "conversation.item.create": _on_item_create,
    }

    # --- figures ---

    def summary(self) -> dict:
        return {
            "speech_started": self.speech_started,
            "responses": [{"item_id": r.item_id, "created_at": r.created_at, "first_audio_at": r.first_audio_at,
                           "status": r.status, "audio_ms_sent": r.audio_ms_sent, "notice": r.notice}
                          for r in self.responses],
            "speech_stopped": self.speech_stopped,
            "resumed": self.resumed,
            "dropped_at": self.dropped_at,
            "truncates": self.truncates,
            "invalid_events": self.invalid_events,
            "double_responses": self.double_responses,
            "errors": self.errors,
            "appended_frames": self.appended_frames,
            "caller_tag": self.caller_tag,
        }


class LeanRealtime:
    def __init__(self, port: int, first_byte_ms: int = 200, greeting_ms: int = 1500, audio_ms: int = 2500,
                 host: str = "127.0.0.1", drop_share: float = 0.0, seed: int = 1, handshake_ms: int = 0,
                 caller_transcripts: tuple[str, ...] = (), transcript_delay_ms: int = 0, latency_ms: int = 0) -> None:
        self.first_byte_ms, self.greeting_ms, self.audio_ms = first_byte_ms, greeting_ms, audio_ms
        self.handshake_ms, self.latency_ms = handshake_ms, latency_ms
        self.caller_transcripts, self.transcript_delay_ms = caller_transcripts, transcript_delay_ms
        self.connections: list[Connection] = []
        self.drop_share, self.seed = drop_share, seed
        self._calls = itertools.count()  # connections that start a call (not a resumed one)
        self._drop_phase = random.Random(seed).random()
        self.server = StreamServer((host, port), self._handle)

    def pick_drop(self) -> int | None:
        """For the k-th call: the response during which to cut it, or None. Exactly `drop_share`
        of the calls in the long run (one each time k·share + phase passes a whole number)."""
        k, share = next(self._calls), self.drop_share
        if share <= 0 or math.floor((k + 1) * share + self._drop_phase) == math.floor(k * share + self._drop_phase):
            return None
        return random.Random(f"{self.seed}:{k}").choice((1, 2, 3))

    def _handle(self, sock, address) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # Nagle would bunch the deltas
        conn = None
        try:
            request = ws_handshake.read_request(sock)
            if request is None:
                return
            target, headers, rest = request
            if urlsplit(target).path != PATH or headers.get("upgrade", "").lower() != "websocket":
                sock.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                return
            if self.handshake_ms:
                gevent.sleep(self.handshake_ms / 1000)  # TLS and the upgrade's round trips to a distant service
            ws_handshake.server_accept(sock, headers)
            conn = Connection(self, sock, target, headers)
            self.connections.append(conn)
            conn.serve(rest)
        except OSError:
            pass
        except Exception:  # noqa: BLE001 - a fake's own failure must show in the figures
            log.exception("lean realtime handler failed")
            if conn is not None:
                conn.errors.append("fake_failed")
                conn.close(1011)
        finally:
            if conn is not None:
                conn.closed = True
            try:
                sock.close()
            except OSError:
                pass

    def start(self) -> "LeanRealtime":
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.close()
        for conn in self.connections:
            conn.close(1001, "server stopping")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--stats", required=True)
    parser.add_argument("--first-byte-ms", type=int, default=200)
    parser.add_argument("--greeting-ms", type=int, default=1500)
    parser.add_argument("--audio-ms", type=int, default=2500)
    parser.add_argument("--drop-share", type=float, default=0.0,
                        help="share of the calls whose connection is cut (TCP reset) mid-response")
    parser.add_argument("--seed", type=int, default=1, help="picks the calls that --drop-share cuts")
    parser.add_argument("--handshake-ms", type=int, default=0, help="delay before accepting each connection")
    parser.add_argument("--latency-ms", type=int, default=0,
                        help="each client message handled this long after it came (a distant service)")
    parser.add_argument("--caller-transcripts", default="[]", help="JSON list: each connection's caller turns, in order")
    parser.add_argument("--transcript-delay-ms", type=int, default=0)
    logging.basicConfig(level=logging.WARNING)
    args = parser.parse_args()
    fake = LeanRealtime(args.port, args.first_byte_ms, args.greeting_ms, args.audio_ms,
                        drop_share=args.drop_share, seed=args.seed, handshake_ms=args.handshake_ms,
                        caller_transcripts=tuple(json.loads(args.caller_transcripts)),
                        transcript_delay_ms=args.transcript_delay_ms, latency_ms=args.latency_ms).start()
    lag = LoopLag().start()
    gc.freeze()  # a full collection walking the startup objects would stall every call's stream
    done = gevent.event.Event()
    gevent.signal_handler(signal.SIGTERM, done.set)
    done.wait()  # until the benchmark is done
    lag.stop()
    records = [conn.summary() for conn in fake.connections]
    with open(args.stats, "w") as fh:
        json.dump({"connections": records, "loop_lag_ms": lag.summary()}, fh)
    with gevent.Timeout(2, False):
        fake.stop()


if __name__ == "__main__":
    main()
