"""One phone call, bridged between Twilio and the Realtime API.

The story: `run` sets up (business, prompts, Realtime connection), configures the
session, greets, then converses until either side ends; `end` stores everything and
closes. Three greenlets carry the call: RX (this one: Twilio frames in), TX
(`Playback.run`: agent audio out, paced) and Realtime (`_realtime_main`: owns the
Realtime socket and handles its events). Collaborators: `Playback` (pacing and
playback clock), `ResponseGate` (one response at a time), `Transcripts` (turns),
`CallFigures` (latencies and counts), `CallJournal` (DB writes off the audio path),
`CallTools` (the model's function calls), `CallEnding` (goodbye heard, then close),
`SilenceWatchdog` (a quiet caller) and `Keypad` (DTMF digits).
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

import gevent
from gevent.event import Event

from prompts import CallPrompts, assemble_call_prompts, crm_context_message
from prompts.tools import call_event
from services import metrics
from services.store.db import Database
from services.logging_setup import call_logger
from services.store.models import Business
from services.settings import Settings
from services import realtime_protocol as rt
from services import twilio_protocol as tw
from services.call_ending import CallEnding, is_farewell
from services.call_figures import CallFigures
from services.call_journal import CallJournal, JournalWriter
from services.crm_context import CallCrmContext
from services.keypad import Keypad
from services.live_calls import LiveCalls, this_process
from services.playback import Playback
from services.post_call import recording
from services.realtime_client import RealtimeClosed, RealtimeConnection, RealtimeUnavailable
from services.response_gate import ResponseGate
from services.silence_watchdog import SilenceWatchdog
from services.tools import CallTools, ToolContext
from services.transcripts import Transcripts
from services.twilio_socket import SocketClosed, TwilioSocket

# Caller audio held while the Realtime session is being configured (50 frames = 1 s).
PRE_SESSION_FRAMES = 50


@dataclass(frozen=True)
class CallSetup:
    """What the stream's `start` told us, after its token was checked."""

    call_sid: str
    stream_sid: str
    business_id: int
    direction: str
    from_number: str
    to_number: str


@dataclass(frozen=True)
class CallServices:
    """Process-wide things a call uses."""

    db: Database
    settings: Settings
    live_calls: LiveCalls
    journal: JournalWriter


class CallSession:
    """Fields without a lock comment have one owner: RX for the setup fields and
    `figures.frames_in`; the Realtime greenlet for `_prompts`, `_greeting_*` and the
    timers. `_transcripts` is shared (Realtime, RX, barge-in) under `_conversation_lock`."""

    def __init__(self, services: CallServices, twilio: TwilioSocket, setup: CallSetup):
        self.setup = setup
        self._services = services
        self._settings = services.settings
        self._timing = services.settings.timing
        self._twilio = twilio
        self.log = call_logger("call", setup.call_sid)
        self._started_mono = time.monotonic()
        self.figures = CallFigures(stream_started_at=self._started_mono)
        self._realtime = RealtimeConnection(services.settings.realtime_ws_url, services.settings.openai_api_key,
                                            self._timing.realtime_connect_timeout_s)
        self._gate = ResponseGate(self._send_realtime, call_logger("realtime", setup.call_sid))
        self._playback = Playback(self._send_twilio, setup.stream_sid, lead_ms=self._timing.tx_lead_ms,
                                  on_first_frame=self.figures.agent_audio_started)
        self._transcripts = Transcripts()
        self._journal = CallJournal(services.journal, setup.call_sid, call_logger("store", setup.call_sid))
        self._ending = CallEnding(self._playback, self.end, self._timing.goodbye_timeout_s, self.log)
        self._watchdog = SilenceWatchdog(self._timing.silence_s, self._silence_does_not_count,
                                         self._ask_if_still_there, self._give_up_on_silence)
        self._keypad = Keypad(self._timing.dtmf_gap_ms / 1000, self._keypad_entered)
        self._tools: CallTools | None = None
        self._business: Business | None = None
        self._crm: CallCrmContext | None = None
        self._prompts: CallPrompts | None = None
        self._session_update: str | None = None
        self._session_ready = Event()  # set once by the Realtime greenlet; RX reads it per frame
        self._rx_messages = 0  # counted by RX; the idle watch reads it
        self._timers: list[gevent.Greenlet] = []
        self._greeting_requested = False
        self._greeting_response_id: str | None = None
        self._greeting_item_id: str | None = None
        # Guards: _transcripts, _caller_speaking, _protected_speech,
        # _ignore_commit and barge-in as a whole. Written by the Realtime greenlet, RX (items
        # heard to the end) and the greeting-guard timer.
        self._conversation_lock = threading.Lock()
        self._caller_speaking = False
        self._protected_speech: str | None = None
        self._ignore_commit: str | None = None
        # Guards: _end_reason. Any greenlet may end the call; the first reason wins.
        self._end_lock = threading.Lock()
        self._end_reason: str | None = None
        self._greenlets: list[gevent.Greenlet] = []

    # --- the call --------------------------------------------------------------------

    def run(self) -> None:
        """Carry the call on the RX greenlet until it ends."""
        services = self._services
        services.live_calls.add(self.setup.call_sid, self)
        metrics.CALLS_ACTIVE.inc()
        try:
            if not self._set_up():
                return
            self._greenlets = [gevent.spawn(self._playback.run), gevent.spawn(self._realtime_main),
                               gevent.spawn_later(self._timing.max_call_s, self._time_is_up),
                               gevent.spawn(self._watch_twilio_idle)]
            self._receive_from_twilio()
        except Exception:
            self.log.exception("call failed")
            self.end("server_error")
        finally:
            self.end(self._end_reason or "stream_closed")
            metrics.CALLS_ACTIVE.dec()
            services.live_calls.remove(self.setup.call_sid)

    def _set_up(self) -> bool:
        setup = self.setup
        with self._services.db.session() as session:
            self._business = session.get(Business, setup.business_id)
            if self._business is not None:
                session.expunge(self._business)
        if self._business is None:
            self.log.error("stream for a business that no longer exists", extra={"business_id": setup.business_id})
            self.end("business_not_found")
            return False
        caller = setup.from_number if setup.direction == "inbound" else setup.to_number
        self._crm = CallCrmContext(self._services.db, setup.business_id, caller, call_sid=setup.call_sid)
        self._crm.start()
        self._tools = CallTools(ToolContext(self._services.db, self._business, setup.call_sid, caller),
                                send=self._send_realtime, gate=self._gate, ending=self._ending,
                                log=call_logger("tools", setup.call_sid))
        self._journal.stream_started(setup.stream_sid, time.time(), this_process())
        gevent.spawn(recording.start, self._services.db, self._settings, setup.call_sid,
                     self._business.record_calls, self.log)
        self.log.info("stream started", extra={"business_id": setup.business_id, "direction": setup.direction})
        return True

    def _receive_from_twilio(self) -> None:
        """RX: caller audio to Realtime, echoed marks to the playback clock."""
        figures = self.figures
        ready = self._session_ready
        backlog: deque[str] = deque()
        while self._end_reason is None:
            try:
                # No timeout here: a timer per read would cost more than the read.
                message = self._twilio.receive()
            except SocketClosed:
                return  # without a `stop`: the caller's side vanished
            self._rx_messages += 1
            try:
                event = tw.parse_frame(message)
            except tw.FrameError as exc:
                if figures.drop_rx(exc.reason) == 1:  # one line per kind of damage, not per frame
                    self.log.warning("dropped malformed Twilio frame", extra={"reason": exc.reason, "detail": str(exc)})
                continue
            if isinstance(event, tw.Media):
                if not ready.is_set():
                    # Before the session is confirmed the model cannot take audio yet: hold the
                    # caller's first words (a bounded second) instead of losing them.
                    backlog.append(event.payload)
                    if len(backlog) > PRE_SESSION_FRAMES:
                        backlog.popleft()
                        figures.drop_rx("session_not_ready")
                    continue
                try:
                    if backlog:
                        for payload in backlog:
                            self._realtime.send(rt.audio_append(payload))
                        figures.frames_in += len(backlog)
                        backlog.clear()
                    self._realtime.send(rt.audio_append(event.payload))
                    figures.frames_in += 1
                except RealtimeClosed:
                    figures.drop_rx("realtime_closed")
            elif isinstance(event, tw.Mark):
                heard_item = self._playback.on_mark(event.name)
                if heard_item is not None:
                    self._agent_item_heard(heard_item)
            elif isinstance(event, tw.Stop):
                self.end("caller_hangup")
                return
            elif isinstance(event, tw.Dtmf):
                self._keypad.press(event.digit)
            else:
                figures.drop_rx("unexpected_" + type(event).__name__.lower())

    def _watch_twilio_idle(self) -> None:
        """Twilio sends a frame every 20 ms; a stream silent this long is dead: end the call,
        which closes the socket and so releases RX from its read."""
        seen = -1
        while self._end_reason is None:
            gevent.sleep(self._timing.twilio_idle_s)
            if self._rx_messages == seen:
                self.log.warning("no frame from Twilio", extra={"for_s": self._timing.twilio_idle_s})
                self.end("twilio_idle")
                return
            seen = self._rx_messages

    def _send_twilio(self, texts: list[str]) -> None:
        try:
            self._twilio.send(*texts)
        except (SocketClosed, OSError):
            pass  # RX sees the close and ends the call

    def _send_realtime(self, text: str) -> None:
        self._realtime.send(text)

    # --- the Realtime side -----------------------------------------------------------

    def _realtime_main(self) -> None:
        log = call_logger("realtime", self.setup.call_sid)
        try:
            self._realtime.connect()
        except RealtimeUnavailable as exc:
            log.error("cannot reach the Realtime API", extra={"error": str(exc)})
            self.end("realtime_unavailable")
            return
        try:
            self._configure_session()
            while self._end_reason is None:
                try:
                    event = self._realtime.receive()
                except rt.ProtocolError as exc:
                    log.warning("unreadable Realtime event", extra={"error": str(exc)})
                    continue
                self._on_realtime_event(event)
        except RealtimeClosed as exc:
            if self._end_reason is None:
                log.error("Realtime socket dropped", extra={"error": str(exc)})
                self.end("realtime_dropped")

    def _configure_session(self) -> None:
        crm = self._crm.wait()
        self._prompts = assemble_call_prompts(self._business, self.setup.direction, crm)
        prompt_info = {"layer_chars": dict(self._prompts.layer_sizes), "warnings": list(self._prompts.warnings)}
        self.log.info("prompts built", extra={"instructions_chars": len(self._prompts.instructions),
                                              **{f"{k}_chars": v for k, v in self._prompts.layer_sizes.items()}})
        self._journal.prompt_built(prompt_info)
        self._session_update = rt.session_update(rt.SessionConfig(
            instructions=self._prompts.instructions, voice=self._business.voice,
            transcription_prompt=self._prompts.transcription_prompt, tools=self._tools.declarations()))
        self._send_realtime(self._session_update)
        self._timers = [gevent.spawn_later(self._timing.session_update_retry_s, self._resend_session_update),
                        gevent.spawn_later(self._timing.session_update_timeout_s, self._session_update_timed_out)]

    def _resend_session_update(self) -> None:
        if not self._session_ready.is_set() and self._end_reason is None:
            self.log.warning("no session.updated yet: sending session.update again")
            try:
                self._send_realtime(self._session_update)
            except RealtimeClosed:
                pass

    def _session_update_timed_out(self) -> None:
        if not self._session_ready.is_set():
            self.log.error("Realtime never confirmed the session",
                           extra={"waited_s": self._timing.session_update_timeout_s})
            self.end("realtime_session_timeout")

    def _on_realtime_event(self, event: rt.ServerEvent) -> None:
        if isinstance(event, rt.AudioDelta):
            self._playback.enqueue(event.response_id, event.item_id, event.audio, self._realtime.received_at)
        elif isinstance(event, rt.TranscriptDelta):
            with self._conversation_lock:
                self._transcripts.agent_delta(event.item_id, event.delta)
        elif isinstance(event, rt.AudioDone):
            self._playback.end_item(event.response_id, event.item_id)
        elif isinstance(event, rt.TranscriptDone):
            with self._conversation_lock:
                self._transcripts.agent_done(event.item_id, event.transcript)
        elif isinstance(event, rt.OutputItemAdded):
            self._on_output_item(event)
        elif isinstance(event, rt.ResponseCreated):
            self._ending.response_created(event.response_id, self._gate.on_created(event.response_id))
            if self._greeting_requested and self._greeting_response_id is None:
                self._greeting_response_id = event.response_id
        elif isinstance(event, rt.ResponseDone):
            self._on_response_done(event)
        elif isinstance(event, rt.SpeechStarted):
            self._on_speech_started(event)
        elif isinstance(event, rt.SpeechStopped):
            self._on_speech_stopped(event)
        elif isinstance(event, rt.InputCommitted):
            self._on_input_committed(event)
        elif isinstance(event, rt.InputTranscript):
            self._on_input_transcript(event)
        elif isinstance(event, rt.SessionUpdated):
            self._on_session_updated()
        elif isinstance(event, rt.ServerError):
            self.log.warning("Realtime error", extra={"code": event.code, "error": event.message})
        elif isinstance(event, rt.InputTranscriptFailed):
            self.log.warning("caller transcription failed", extra={"error": event.message})

    def _on_session_updated(self) -> None:
        if self._session_ready.is_set():
            return
        for timer in self._timers:
            timer.kill(block=False)
        self._session_ready.set()
        self.log.info("session confirmed", extra={"after_ms": round((time.monotonic() - self._started_mono) * 1000)})
        self._gate.open()
        self._send_late_crm()
        self._greeting_requested = True
        self._gate.request("greeting", self._prompts.greeting_instruction)
        self._greenlets.append(gevent.spawn(self._watchdog.run))

    def _send_late_crm(self) -> None:
        facts = self._crm.late_facts()
        message = crm_context_message(self._business, facts) if facts is not None else ""
        if message:
            self.log.info("caller context arrived after session.update: sent as a context item")
            self._send_realtime(rt.system_message(message))

    def _on_output_item(self, event: rt.OutputItemAdded) -> None:
        if event.item_type != "message":
            return
        with self._conversation_lock:
            self._transcripts.agent_item(event.response_id, event.item_id, time.time())
        if event.response_id == self._greeting_response_id and self._greeting_item_id is None:
            self._greeting_item_id = event.item_id

    def _on_response_done(self, event: rt.ResponseDone) -> None:
        self._gate.on_done(event.response_id)
        if event.usage is not None:
            self.figures.add_usage(event.usage)
        if event.status not in ("completed", "cancelled"):
            self.log.warning("response ended badly", extra={"status": event.status, "why": event.status_reason})
        # Items with audio are stored once heard (their mark comes back) or cut; an item
        # that never had audio was never heard.
        with self._conversation_lock:
            silent = [self._transcripts.take(item_id) for item_id in self._transcripts.items_of(event.response_id)
                      if not self._playback.has_audio(item_id)]
        for item in silent:
            if event.status == "completed":
                self._store_agent_item(item)
        self._ending.response_done(event.response_id, tool_calls=bool(event.function_calls))
        if event.function_calls and event.status == "completed" and self._end_reason is None:
            self._tools.handle(event.response_id, event.function_calls, self._playback.spoke(event.response_id))

    def _agent_item_heard(self, item_id: str) -> None:
        """RX: the caller heard the whole item."""
        with self._conversation_lock:
            item = self._transcripts.take(item_id)
        if item is not None:
            self._store_agent_item(item)
        self._ending.item_heard(item_id)

    def _store_agent_item(self, item) -> None:
        text = item.heard_text()
        if not text and item.heard_ms is None:
            return
        self._journal.add_turn("agent", text, item.started_at, item_id=item.item_id,
                               interrupted=item.heard_ms is not None,
                               latency_ms=self.figures.response_item_latency(item.item_id))

    def _on_input_committed(self, event: rt.InputCommitted) -> None:
        with self._conversation_lock:
            noise = self._ignore_commit == event.item_id
            self._ignore_commit = None
        if noise:
            self.log.info("speech during the protected greeting: no response to it")
            return
        if self._ending.forced:
            self.log.info("the call is closing: no answer to the caller's last words")
            return
        self._send_late_crm()
        self._gate.request("caller_turn")

    def _on_input_transcript(self, event: rt.InputTranscript) -> None:
        text = event.transcript.strip()
        with self._conversation_lock:
            started = self._transcripts.caller_started_at(event.item_id, time.time())
        if text:
            self._journal.add_turn("caller", text, started, item_id=event.item_id)
        if is_farewell(text):
            # The call ends once the agent's answer to the goodbye has been heard.
            response_id, request = self._gate.active_request
            if request == "caller_turn" and response_id is not None:
                self._ending.begin("caller_goodbye", cancellable=True, response_id=response_id)
            else:
                self._ending.begin("caller_goodbye", cancellable=True, awaiting="caller_turn")

    # --- barge-in ----------------------------------------------------------------------

    def _on_speech_started(self, event: rt.SpeechStarted) -> None:
        now = time.monotonic()
        self._watchdog.heard_from_caller()
        with self._conversation_lock:
            self._transcripts.caller_started(event.item_id, time.time())
            self._caller_speaking = True
            if not (self._playback.is_playing() or self._gate.is_active):
                return
            protect_left = self._greeting_protection_left_ms()
            if protect_left > 0:
                # Line noise must not cut the greeting. A burst is over (speech_stopped) within
                # the VAD's silence window after it ends; speech still going on after both the
                # protected start and that window is real, and cuts the greeting then.
                decide_in_ms = max(protect_left, rt.VAD_SILENCE_MS + self._timing.greeting_noise_max_ms)
                self._protected_speech = event.item_id
                self._timers.append(gevent.spawn_later(decide_in_ms / 1000, self._greeting_guard, event.item_id))
                return
            self._barge_in(now)

    def _greeting_protection_left_ms(self) -> int:
        """How much longer the greeting is protected; 0 when it is not what is playing."""
        greeting_item = self._greeting_item_id
        greeting_pending = self._greeting_requested and greeting_item is None and self._gate.is_active
        if greeting_pending:
            return self._timing.greeting_protect_ms
        if greeting_item is None or self._playback.playing_item() != greeting_item:
            return 0
        return max(0, self._timing.greeting_protect_ms - self._playback.heard_ms(greeting_item))

    def _greeting_guard(self, item_id: str) -> None:
        """The protected start is over: speech still going on is real, and cuts the greeting."""
        with self._conversation_lock:
            if self._protected_speech != item_id or self._end_reason is not None:
                return
            self._protected_speech = None
            if self._caller_speaking and (self._playback.is_playing() or self._gate.is_active):
                self._barge_in(time.monotonic())

    def _on_speech_stopped(self, event: rt.SpeechStopped) -> None:
        self.figures.speech_stopped(time.monotonic())
        with self._conversation_lock:
            self._caller_speaking = False
            if self._protected_speech == event.item_id:
                self._protected_speech = None
                self._ignore_commit = event.item_id

    def _barge_in(self, speech_at: float) -> None:
        """The caller talks over the agent: silence it, cancel, and tell the model what was heard.

        Called under `_conversation_lock`.
        """
        active = self._gate.active_response_id
        heard = self._playback.clear(mute=(active,) if active else ())
        if heard is not None:
            self._send_twilio([tw.clear_message(self.setup.stream_sid)])
            self.figures.barge_in((time.monotonic() - speech_at) * 1000)
        if self._gate.is_active:
            self._gate.drop_pending()
            self._send_realtime(rt.response_cancel())
        if heard is not None:
            self._send_realtime(rt.item_truncate(heard.item_id, heard.heard_ms))
            cut = self._transcripts.take_cut(heard.item_id, heard.heard_ms, heard.sent_ms)
            if cut is not None:
                self._store_agent_item(cut)
        self.log.info("barge-in", extra={"item_id": heard.item_id if heard else None,
                                         "heard_ms": heard.heard_ms if heard else None})
        self._ending.interrupted()

    # --- call control: silence, the time limit, the keypad -----------------------------

    def _silence_does_not_count(self) -> bool:
        """The agent is speaking or about to, the caller is speaking, or the call is ending."""
        with self._conversation_lock:
            speaking = self._caller_speaking
        return (speaking or self._playback.is_playing() or self._gate.is_active or self._tools.busy
                or self._ending.reason is not None)

    def _ask_if_still_there(self) -> None:
        self.log.info("caller silent: asking whether they are still there")
        self._tell_model(call_event("Silence check"), "silence_check")

    def _give_up_on_silence(self) -> None:
        if self._ending.begin("silence", cancellable=True, awaiting="goodbye"):
            self._tell_model(call_event("Silence goodbye"), "goodbye")

    def _time_is_up(self) -> None:
        if self._ending.begin("max_duration", cancellable=False, awaiting="goodbye"):
            self._tell_model(call_event("Time limit"), "goodbye")

    def _keypad_entered(self, digits: str) -> None:
        self.log.info("keypad", extra={"digits": digits})
        self._watchdog.heard_from_caller()
        self._journal.add_turn("dtmf", digits, time.time())
        self._tell_model(call_event("Keypad", digits=digits), "keypad", from_caller=True)

    def _tell_model(self, text: str, request: str, *, from_caller: bool = False) -> None:
        """A notice as a conversation item (the caller's, or the server's), then a response to it."""
        try:
            self._send_realtime(rt.user_text_message(text) if from_caller else rt.system_message(text))
            self._gate.request(request)
        except RealtimeClosed:
            pass  # the Realtime greenlet ends the call

    # --- the end ---------------------------------------------------------------------

    def end(self, reason: str) -> None:
        """End the call once, from any greenlet: store everything, then close the stream.

        The row is written before the stream closes, because Twilio asks
        `/webhook/stream_ended` what to do next as soon as it does.
        """
        with self._end_lock:
            if self._end_reason is not None:
                return
            self._end_reason = reason
        self.log.info("call ending", extra={"end_reason": reason})
        me = gevent.getcurrent()
        self._playback.stop()
        for greenlet in self._timers + self._greenlets:
            if greenlet is not me:
                greenlet.kill(block=False)
        self._ending.close()
        self._keypad.close()
        if self._tools is not None:
            self._tools.close()
        self._realtime.close()
        with self._conversation_lock:
            unfinished = self._transcripts.unfinished()
        for item in unfinished:
            if self._playback.has_audio(item.item_id):
                self._store_agent_item(item)
        if self._crm is not None:
            self._crm.close()
        playback = self._playback
        figures, usage, cost = self.figures.summary(playback.frames_out, playback.frames_dropped,
                                                    playback.lateness_ms, self._settings.openai_realtime_model)
        self._journal.finish(reason, time.time(), figures, usage, cost)
        self._journal.close()
        metrics.CALLS_ENDED.labels(reason).inc()
        self.log.info("call ended", extra={"end_reason": reason, "frames_in": figures["frames_in"],
                                           "frames_out": figures["frames_out"],
                                           "greeting_ms": figures["greeting_latency_ms"]})
        self._twilio.close(1000)
