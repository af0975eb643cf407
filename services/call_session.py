"""One phone call, bridged between Twilio and the Realtime API.

The story, in `run`: set up (the business, its caller's CRM facts, the tools), then two
greenlets carry the call until either side ends it: the Realtime greenlet (`_talk`: configure
the session, greet, converse) and RX (`_listen`: the caller's frames). Then `end` stores
everything and closes. TX (`Playback.run`) paces the agent's audio out. The worker's call
watch (services/call_watch.py) looks at the call every tick (`_watch`): a quiet stream, the time
limit, the caller's silence, the Realtime socket's signs of life.

Collaborators, each a module of its own: `Playback` (pacing and the playback clock),
`ResponseGate` (one response at a time), `Greeting`, `BargeIn`, `Transcripts` (turns),
`CallFigures` (latencies and counts), `CallJournal` (DB writes off the audio path), `CallTools`
(the model's function calls), `CallEnding` (the last words heard, then close), `SilenceWatchdog`,
`Keypad` (DTMF), `RealtimeWatch` (pings, and a response that stalls) and `CallerAudio` (RX's
frames to the model, held while there is no session).

Lock order, for every lock a call takes (an arrow: may be taken while holding the one before):
    BargeIn._lock → Greeting._lock | Playback._lock | Transcripts._lock | CallFigures._lock
                  | JournalWriter._lock (storing the heard part)
                  → ResponseGate._lock → ws.lock (the Realtime socket's writes)
                  → TwilioSocket._send_lock
                  → CallEnding._lock → Playback._lock
    ResponseGate._lock → ws.lock                (it sends `response.create` under its lock)
    CallEnding._lock → Playback._lock
The others (`_end_lock`, Greeting, Playback, Transcripts, CallFigures, JournalWriter,
CallGreenlets, Keypad, SilenceWatchdog, CallTools, LiveCalls, AnsweringMachineWait, CallWatch,
ws.lock, TwilioSocket's) are leaves: nothing is taken while one is held. The only locks held
across a socket write are BargeIn's (a cut is one act), ResponseGate's (a cancel must not
overtake its create) and the sockets' own; Playback writes frames after releasing its lock.
"""
from __future__ import annotations

import threading
import time
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone

import gevent
from gevent.event import Event
from prompts import assemble_call_prompts, crm_context_message
from prompts.tools import call_event
from services import metrics
from services import realtime_protocol as rt
from services import realtime_settings
from services import twilio_protocol as tw
from services.barge_in import BargeIn, Turn
from services.call_ending import CallEnding, is_farewell
from services.call_figures import CallFigures
from services.call_greenlets import CallGreenlets
from services.call_journal import GREETING, LISTENING, SPEAKING, CallJournal, JournalWriter
from services.call_watch import CallWatch
from services.caller_audio import CallerAudio
from services.crm_context import CallCrmContext
from services.greeting import Greeting
from services.keypad import Keypad
from services.live_calls import LiveCalls, this_process
from services.logging_setup import call_logger
from services.loop_quiet import wait_for_quiet
from services.playback import Playback
from services.post_call import recording
from services.realtime_client import RealtimeClosed, RealtimeConnection, RealtimeUnavailable
from services.realtime_pool import RealtimePool
from services.realtime_watch import RealtimeWatch
from services.response_gate import RequestReason, ResponseGate
from services.scheduling import business_today
from services.settings import Settings, realtime_url
from services.silence_watchdog import SilenceWatchdog
from services.store.db import Database
from services.store.end_reasons import EndReason
from services.store.call_records import set_transfer_to
from services.store.models import Business
from services.tools import CallTools, ToolContext
from services.transcripts import AgentItem, Transcripts
from services.twilio_socket import SocketClosed, TwilioSocket
from services.voicemail import AnsweringMachineWait, machine_end_reason
from services.warm_transfer import EarlierConversation, earlier_conversation

# How long RX waits for an end begun on another greenlet (its journal close waits 10 s at most).
END_WAIT_S = 15.0
# A response that fails before a word is asked for once more for these; the greeting and the
# goodbye are not (their owners, `Greeting` and `CallEnding`, hold on to the response).
_ASKED_AGAIN_AFTER_FAILING = frozenset({RequestReason.CALLER_TURN, RequestReason.KEYPAD, RequestReason.TOOL_RESULT,
                                        RequestReason.SILENCE_CHECK, RequestReason.RESUME})


@dataclass(frozen=True)
class CallSetup:
    """What the stream's `start` told us, after its token was checked."""

    call_sid: str
    stream_sid: str
    business_id: int
    direction: str
    from_number: str
    to_number: str
    is_test: bool = False  # from the console's Talk to your agent: a browser, no Twilio call to record
    resumed: bool = False  # a later stream of the call: back from a transfer no one took


@dataclass(frozen=True)
class CallServices:
    """Process-wide things a call uses."""

    db: Database
    settings: Settings
    live_calls: LiveCalls
    journal: JournalWriter
    call_watch: CallWatch
    realtime_pool: RealtimePool | None = None  # where a lost session's replacement may be waiting


# The events of a response: those of a withdrawn greeting are dropped (CallSession._of_withdrawn_greeting).
_RESPONSE_EVENTS = (rt.ResponseCreated, rt.OutputItemAdded, rt.AudioDelta, rt.AudioDone, rt.TranscriptDelta,
                    rt.TranscriptDone, rt.ResponseDone)


class CallSession:
    """Owners of the fields without a lock of their own:
    - `_business`, `_crm`, `_tools`, `_realtime_settings` (and the first `_realtime`), `_earlier`,
      `_machine_wait`: written by RX in `_set_up`, before any other greenlet of the call starts;
      read-only after.
    - `_greeting_instruction`, `_session_update`, `_session_timers`, `_losses`, `_lost_at`, `_greeted`,
      `_greeted_early`, `_withdrawn`, `_was_speaking`, `_asked_again`, `_unanswered`, `_answered_by`:
      the Realtime greenlet's;
      the session timers read `_session_update`, written before they start.
    - `_realtime`: replaced only by the Realtime greenlet, and only while `_session_ready` is
      clear, so RX never sends on a connection being opened; any sender may meet the closed one
      and get RealtimeClosed (RX then holds the frame: `CallerAudio`). `_last_event_at`: the
      Realtime greenlet writes, the liveness watch reads.
    - `_rx_messages`, `_caller_audio`: RX's only; the call watch only reads `_rx_messages`.
    - `_rx_counted`, `_rx_counted_at`, `_watch_ended`, `_time_up`: the call watch's (`_watch`);
      `_conversation_watched`: written once by the Realtime greenlet, read by the call watch.
    - `_session_ready`: an event the Realtime greenlet sets, and clears while it reconnects;
      `_ended`: an event set once, by `end`.
    """

    def __init__(self, services: CallServices, twilio: TwilioSocket, setup: CallSetup,
                 realtime: RealtimeConnection | None = None):
        """`realtime`: a connection already being opened for this call (`open_early`)."""
        self.setup = setup
        self._services = services
        self._settings = services.settings
        self._timing = timing = services.settings.timing
        self._twilio = twilio
        self.log = call_logger("call", setup.call_sid)
        self._started_mono = time.monotonic()
        self.figures = CallFigures(stream_started_at=self._started_mono)
        self._greenlets = CallGreenlets()
        self._realtime_settings = realtime_settings.effective(None, services.settings.openai_realtime_model)
        self._realtime = realtime or RealtimeConnection(services.settings.realtime_ws_url,
                                                        services.settings.openai_api_key,
                                                        timing.realtime_connect_timeout_s)
        self._gate = ResponseGate(self._send_realtime, call_logger("realtime", setup.call_sid))
        self._playback = Playback(self._send_twilio, setup.stream_sid, lead_ms=timing.tx_lead_ms,
                                  on_first_frame=self._first_frame)
        self._greeting = Greeting(self._gate, self._playback, timing.greeting_protect_ms)
        self._transcripts = Transcripts()
        self._journal = CallJournal(services.journal, setup.call_sid, call_logger("store", setup.call_sid))
        self._ending = CallEnding(self._playback, self.end, timing.goodbye_timeout_s, self.log)
        self._barge_in = BargeIn(
            playback=self._playback, gate=self._gate, greeting=self._greeting, transcripts=self._transcripts,
            figures=self.figures, ending=self._ending, clear_twilio=self._clear_twilio,
            send_realtime=self._send_realtime, store_item=self._store_agent_item, answer_turn=self._answer_held_turn,
            spawn_later=self._greenlets.spawn_later, noise_max_ms=timing.greeting_noise_max_ms,
            hold_ms=timing.barge_in_hold_ms, transcript_wait_ms=timing.barge_in_transcript_wait_ms, log=self.log)
        self._watchdog = SilenceWatchdog(timing.silence_s, self._silence_does_not_count,
                                         lambda: self._greenlets.spawn(self._ask_if_still_there),
                                         lambda: self._greenlets.spawn(self._give_up_on_silence))
        self._keypad = Keypad(timing.dtmf_gap_ms / 1000, self._keypad_entered)
        self._business: Business | None = None
        self._crm: CallCrmContext | None = None
        self._tools: CallTools | None = None
        # A later stream of the call (back from a transfer no one took): the conversation to restore.
        self._earlier: EarlierConversation | None = None
        # Outbound: the first words wait for the answering machine detection (services/voicemail.py).
        self._machine_wait: AnsweringMachineWait | None = None
        self._greeting_instruction = ""  # of the prompts: the rest lives on in `_session_update` only
        # Kept for the whole call (a retry, a reconnect), compressed: 4.9 KB of UTF-8 become 2.2.
        self._session_update = b""
        self._session_timers: list[gevent.Greenlet | None] = []
        self._session_ready = Event()  # set by the Realtime greenlet, cleared while it reconnects
        self._caller_audio = CallerAudio(self._send_realtime, self._session_ready, self.figures)
        self._rx_messages = 0
        self._losses = 0  # Realtime sessions lost so far
        self._lost_at = 0.0
        self._greeted = False
        # The greeting was asked for right behind the first `session.update` (`_greet_early`).
        self._greeted_early = False
        # Response and item ids of a greeting withdrawn because that update was refused: their
        # events are dropped (None: nothing withdrawn).
        self._withdrawn: tuple[set[str], set[str]] | None = None
        self._was_speaking = False  # when the session was lost
        self._asked_again = False  # a failed response was asked for again, and none has completed since
        # The caller's committed items, until their transcript (or its failure): those waiting for
        # the response to their turn, and which response answered each (a goodbye ends after it).
        self._unanswered: list[str] = []
        self._answered_by: dict[str, str] = {}
        self._last_event_at = 0.0
        # Guards: _end_reason. Any greenlet may end the call; the first reason wins, and
        # `_ended` is set with it (read lock-free by the loops that stop on it).
        self._end_lock = threading.Lock()
        self._end_reason: EndReason | None = None
        self._ended = Event()
        self._end_done = Event()  # set once `end` has stored the call and closed the stream
        self._realtime_watch = RealtimeWatch(
            connection=lambda: self._realtime, last_event_at=lambda: self._last_event_at, gate=self._gate,
            figures=self.figures, timing=timing, session_ready=self._session_ready, ended=self._ended,
            spawn=self._greenlets.spawn, log=call_logger("realtime", setup.call_sid))
        # The call watch's own (`_watch`): RX's frame count when it last moved, and when; the
        # ending it began (a quiet stream, the time limit), each once.
        self._rx_counted = -1
        self._rx_counted_at = 0.0
        self._watch_ended = False
        self._time_up = False
        self._conversation_watched = False  # set by the Realtime greenlet once the first words are asked for

    # --- the story ---------------------------------------------------------------------

    def run(self) -> None:
        """Carry the call on the RX greenlet until it ends: set up, talk and listen, end."""
        services = self._services
        services.live_calls.add(self.setup.call_sid, self)
        metrics.CALLS_ACTIVE.inc()
        try:
            if self._set_up():
                self._greenlets.spawn(self._playback.run)
                self._greenlets.spawn(self._talk)
                services.call_watch.watch(self.setup.call_sid, self._watch)
                self._listen()
        except Exception:
            self.log.exception("call failed")
            self.end(EndReason.SERVER_ERROR)
        finally:
            self.end(EndReason.STREAM_CLOSED)  # unless something ended it first, with its reason
            # An end begun on another greenlet (a timer, the Realtime greenlet) may still be
            # storing the call: returning closes the stream, and Twilio then asks
            # /webhook/stream_ended what next, which reads the row.
            if not self._end_done.wait(END_WAIT_S):
                self.log.error("call end still running; the stream closes anyway", extra={"waited_s": END_WAIT_S})
            metrics.CALLS_ACTIVE.dec()
            services.live_calls.remove(self.setup.call_sid)

    def _set_up(self) -> bool:
        """RX, before anything else of the call runs: the business, CRM lookup, tools, the row."""
        setup = self.setup
        with self._services.db.session() as session:
            business = session.get(Business, setup.business_id)
            if business is not None:
                session.expunge(business)
        if business is None:
            self.log.error("stream for a business that no longer exists", extra={"business_id": setup.business_id})
            self.end(EndReason.BUSINESS_NOT_FOUND)
            return False
        self._business = business
        self._realtime_settings = realtime_settings.of_business(business.realtime, self._settings, self.log)
        url = self._realtime_url()
        if self._realtime.url != url:  # opened ahead for the default model; this business has its own
            self._realtime.close()
            self._realtime = RealtimeConnection(url, self._settings.openai_api_key,
                                                self._timing.realtime_connect_timeout_s)
        self._barge_in.configure(business.barge_in_mode, business.backchannel_words)
        caller = setup.from_number if setup.direction == "inbound" else setup.to_number
        self._crm = CallCrmContext(self._services.db, setup.business_id, caller, call_sid=setup.call_sid)
        self._crm.start()
        self._tools = CallTools(ToolContext(self._services.db, business, setup.call_sid, caller),
                                send=self._send_realtime, gate=self._gate, ending=self._ending,
                                log=call_logger("tools", setup.call_sid))
        self._journal.stream_started(setup.stream_sid, time.time(), this_process())
        self._earlier = earlier_conversation(self._services.db, setup.call_sid) if setup.resumed else None
        if self._earlier is not None:
            for role, text in self._earlier.said:
                self._transcripts.said(role, text)
        elif setup.direction == "outbound":
            self._machine_wait = AnsweringMachineWait(self._services.db, setup.call_sid, self._timing.amd_wait_s,
                                                      on_machine=self._machine_answered, log=self.log)
            self._greenlets.spawn(self._machine_wait.run)
        self.log.info("stream started", extra={"business_id": setup.business_id, "direction": setup.direction,
                                               "is_test": setup.is_test})
        return True

    def _talk(self) -> None:
        """The Realtime greenlet: configure the session, greet, converse, until the call ends.

        A session lost mid-call (closed, a fatal error, or silent past its deadlines) is opened
        again once, with the same `session.update` and the conversation so far (`_resume`); a
        second loss hands the call over (`_hand_over`)."""
        log = call_logger("realtime", self.setup.call_sid)
        while not self._ended.is_set():
            try:
                if self._configure_session(log):
                    if self._greeted:
                        self._resume(log)
                    else:
                        self._greet()
                    self._converse(log)
                return
            except RealtimeClosed as exc:
                if self._ended.is_set() or not self._session_lost(log, str(exc)):
                    return

    def _configure_session(self, log) -> bool:
        """Build the session's configuration once the CRM facts are in (or their wait is over),
        while the connection opens (ahead of the call, or since Twilio's upgrade); connect; send
        `session.update`, and read events until the session is confirmed. A resend and a
        deadline run as timers."""
        if self._session_update:
            update = zlib.decompress(self._session_update)
        else:
            prompts = assemble_call_prompts(self._business, self.setup.direction, self._crm.wait(),
                                            business_today(self._business, datetime.now(timezone.utc)))
            self._greeting_instruction = prompts.greeting_instruction
            self.log.info("prompts built", extra={"instructions_chars": len(prompts.instructions),
                                                  **{f"{k}_chars": v for k, v in prompts.layer_sizes.items()}})
            self._journal.prompt_built({"layer_chars": dict(prompts.layer_sizes), "warnings": list(prompts.warnings)})
            update = rt.session_update(realtime_settings.session_config(
                self._realtime_settings, instructions=prompts.instructions, voice=self._business.voice,
                transcription_prompt=prompts.transcription_prompt, tools=self._tools.declarations())).encode()
        try:
            self._realtime.connect()
        except RealtimeUnavailable as exc:
            if self._losses:
                self._session_lost(log, f"reconnect failed: {exc}")
                return False
            log.error("cannot reach the Realtime API", extra={"error": str(exc)})
            self.end(EndReason.REALTIME_UNAVAILABLE)
            return False
        try:
            self._send_realtime(update)
        finally:
            if not self._session_update:  # kept compressed once sent: the greeting does not wait on it
                self._session_update = zlib.compress(update)
        self._session_timers = [
            self._greenlets.spawn_later(self._timing.session_update_retry_s, self._resend_session_update),
            self._greenlets.spawn_later(self._timing.session_update_timeout_s, self._session_update_timed_out)]
        if self._may_greet_early():
            self._greet_early()
        while not self._ended.is_set():
            event = self._next_event(log)
            if isinstance(event, rt.SessionUpdated):
                return True
            if event is not None:
                self._on_realtime_event(event)
        return False

    def _may_greet_early(self) -> bool:
        """The greeting may go right behind the first `session.update`, a round trip to the API
        sooner than after `session.updated`, when nothing must come before it: not a session
        opened again, nor a call back from a transfer (the conversation is replayed first), nor an
        outbound call waiting for the machine detection, nor an ending begun, nor caller facts
        that may still come (sent before the greeting, so it can use them)."""
        return (not self._greeted and self._earlier is None and self._machine_wait is None
                and self._ending.reason is None and not self._crm.may_have_late_facts())

    def _greet_early(self) -> None:
        """The API applies a session's client events in order: this greeting is spoken under the
        `session.update` just sent, or, if the API refuses that update, withdrawn unheard
        (`_withdraw_early_greeting`)."""
        self._greeted_early = True
        self._gate.open()
        self._greeting.request(self._greeting_instruction)

    def _withdraw_early_greeting(self) -> None:
        """An error before the first session is confirmed: the update was refused, and the
        greeting behind it would be spoken under the API's defaults. It is cancelled, none of its
        audio or text is kept, and it is asked for again once a session is confirmed."""
        if not self._greeted_early or self._greeted or self._withdrawn is not None:
            return
        self.log.warning("session.update refused: the greeting asked for behind it is withdrawn")
        self._withdrawn = (set(), set())
        self._gate.shut()
        self._greeting.withdraw()
        self._playback.clear()
        try:
            self._send_realtime(rt.response_cancel())
        except RealtimeClosed:
            pass

    def _of_withdrawn_greeting(self, event: rt.ServerEvent) -> bool:
        """Before the session is confirmed every response event is the withdrawn greeting's; after
        it, those of its response and items."""
        responses, items = self._withdrawn
        if not self._greeted and isinstance(event, _RESPONSE_EVENTS):
            if hasattr(event, "response_id"):
                responses.add(event.response_id)
            if isinstance(event, rt.OutputItemAdded):
                items.add(event.item_id)
            return True
        return getattr(event, "response_id", None) in responses or (
            isinstance(event, (rt.TranscriptDelta, rt.TranscriptDone)) and event.item_id in items)

    def _greet(self) -> None:
        """The session is confirmed: open the gate, hand over late CRM facts, ask for the greeting
        unless it went right behind `session.update` (or, when the call began to end meanwhile,
        for its goodbye). A call back from a transfer first tells the new session the
        conversation so far, as a reconnect does."""
        self._stop_session_timers()
        self._greeted = True
        if self._earlier is not None:
            self._replay_conversation()
        self._session_ready.set()
        self.log.info("session confirmed", extra={"after_ms": round((time.monotonic() - self._started_mono) * 1000)})
        goodbye = self._ask_for_goodbye_now_ready()
        self._gate.open()
        self._send_late_crm()
        if not goodbye:
            self._speak_first()
        # After the first words are asked for, not at `start`: the REST request's work would delay
        # them. Once per call: Twilio records the whole call, a later stream included.
        if not self.setup.resumed:
            gevent.spawn(self._record, self._business.record_calls and not self.setup.is_test)
        self._conversation_watched = True

    def _record(self, record_calls: bool) -> None:
        """A greenlet of its own: the recording asked for once the loop has a moment (the calls
        arriving with this one greeted first), its sid stored with the call's next writes."""
        wait_for_quiet()
        sid = recording.start(self._settings, self.setup.call_sid, record_calls, self.log)
        if sid is not None:
            self._journal.recording_started(sid)

    def _speak_first(self) -> None:
        """The greeting; back from a transfer, what the agent says about it; on an outbound call,
        once the answering machine detection says a person answered, or its wait is over."""
        if self._earlier is not None:
            self._tell_model(self._earlier.notice, RequestReason.RESUME)
        elif self._machine_wait is not None:
            self._machine_wait.greet_when_known(self._greet_after_waiting)
        else:
            self._greeting.request(self._greeting_instruction)

    def _greet_after_waiting(self) -> None:
        """The machine detection's wait (its greenlet, or the Realtime greenlet's `_speak_first`)."""
        try:
            self._greeting.request(self._greeting_instruction)
        except RealtimeClosed:
            pass  # the Realtime greenlet reconnects, or ends the call

    def _machine_answered(self, answered_by: str) -> None:
        """The wait's greenlet: a machine answered before the agent spoke. The call ends, and
        `/webhook/stream_ended` leaves the voicemail message (services/voicemail.py)."""
        self.log.info("answering machine: leaving the voicemail message", extra={"answered_by": answered_by})
        self.end(machine_end_reason(answered_by))

    def _converse(self, log) -> None:
        while not self._ended.is_set():
            event = self._next_event(log)
            if event is not None:
                self._on_realtime_event(event)

    def _listen(self) -> None:
        """RX: caller audio to Realtime, echoed marks to the playback clock, until the caller goes."""
        figures = self.figures
        audio = self._caller_audio
        while not self._ended.is_set():
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
                audio.forward(event.payload)
            elif isinstance(event, tw.Mark):
                heard_item = self._playback.on_mark(event.name)
                if heard_item is not None:
                    self._agent_item_heard(heard_item)
            elif isinstance(event, tw.Stop):
                self.end(EndReason.CALLER_HANGUP)
                return
            elif isinstance(event, tw.Dtmf):
                self._keypad.press(event.digit)
            else:
                kind = "unexpected_" + type(event).__name__.lower()
                if figures.drop_rx(kind) == 1:  # once per kind: a peer repeating it is not news
                    self.log.warning("ignored a Twilio frame not expected mid-call", extra={"kind": kind})

    # --- a lost Realtime session ----------------------------------------------------

    def _session_lost(self, log, why: str) -> bool:
        """The Realtime session is gone. The first time: silence the agent, hold the caller's
        audio, and open a new connection (True); the second: hand the call over (False). An
        ending whose last words are all in needs no new session: they play out (False)."""
        if self._ending.line_lost():
            log.warning("Realtime session lost with the last words in: the call ends once they are heard",
                        extra={"error": why})
            self._session_ready.clear()  # RX holds the caller's audio; the watch rests
            self._gate.shut()
            self._realtime.close()
            return False
        self._losses += 1
        if self._losses > 1:
            log.error("Realtime session lost again: handing the call over", extra={"error": why})
            metrics.REALTIME_RECONNECTS.labels("gave_up").inc()
            self._hand_over()
            return False
        log.warning("Realtime session lost: reconnecting", extra={"error": why})
        self._lost_at = time.monotonic()
        self._session_ready.clear()  # RX holds the caller's audio from here
        self._stop_session_timers()
        self._was_speaking = self._barge_in.line_lost()
        self._gate.shut()
        self._unanswered.clear()  # the old session's items: their transcripts will not come
        self._answered_by.clear()
        self._realtime.close()
        url = self._realtime_url()
        pool = self._services.realtime_pool
        self._realtime = ((pool.take(url) if pool is not None else None)
                          or RealtimeConnection(url, self._settings.openai_api_key,
                                                self._timing.realtime_reconnect_timeout_s))
        return True

    def _realtime_url(self) -> str:
        return realtime_url(self._settings.openai_realtime_url, self._realtime_settings.model)

    def _resume(self, log) -> None:
        """The new session is confirmed: tell it the conversation so far, let the held audio
        through, and have the agent apologise if it was cut off mid-sentence."""
        self._stop_session_timers()
        replayed = self._replay_conversation()
        gap_ms = (time.monotonic() - self._lost_at) * 1000
        self.figures.reconnect_gaps_ms.append(gap_ms)
        metrics.REALTIME_RECONNECTS.labels("resumed").inc()
        log.info("Realtime session resumed", extra={"gap_ms": round(gap_ms), "turns_replayed": replayed})
        self._session_ready.set()
        goodbye = self._ask_for_goodbye_now_ready()
        self._gate.open()
        if not goodbye and self._was_speaking:
            self._tell_model(call_event("Reconnected"), RequestReason.RESUME)

    def _replay_conversation(self) -> int:
        """Tell a new session the conversation so far, as text items; how many there were."""
        said = self._transcripts.so_far()
        for role, text in said:
            self._send_realtime(rt.user_text_message(text) if role == "user" else rt.assistant_text_message(text))
        return len(said)

    def _ask_for_goodbye_now_ready(self) -> bool:
        """A session has just become ready: an ending's goodbye not yet asked for on it (it died
        with the old session, or the ending began while this one was being opened) is asked for
        now, before the gate opens, standing in for any request held meanwhile. True if it was."""
        notice = self._ending.ask_again(call_event("After end_call"))
        if notice is not None:
            self._tell_model(notice, RequestReason.GOODBYE)
        return notice is not None

    def _hand_over(self) -> None:
        """No model to talk to: a person takes the call when the business has a transfer number
        (`/webhook/stream_ended` dials it), else the caller hears a short apology."""
        number = getattr(self._business, "transfer_number", None)
        if number:
            self._store_transfer_to(number)
        self.end(EndReason.REALTIME_DROPPED)

    def _store_transfer_to(self, number: str) -> bool:
        """Where `/webhook/stream_ended` sends the call, written now: it asks as soon as the
        stream closes. Off the audio path (the call is ending), like the transfer tool's write."""
        try:
            with self._services.db.session() as session:
                return set_transfer_to(session, self.setup.call_sid, number)
        except Exception:
            self.log.exception("could not store the transfer number: the caller hears the apology instead")
            return False

    def _stop_session_timers(self) -> None:
        for timer in self._session_timers:
            if timer is not None:
                timer.kill(block=False)
        self._session_timers = []

    # --- the sockets ---------------------------------------------------------------------

    def _watch(self, now: float) -> None:
        """The call watch's look at this call (services/call_watch.py): Twilio's stream, the
        time limit, and once the first words are asked for, the caller's silence and the
        Realtime socket. What may block goes to the call's greenlets."""
        if self._ended.is_set():
            return
        count = self._rx_messages
        if count != self._rx_counted:
            self._rx_counted, self._rx_counted_at = count, now
        elif now - self._rx_counted_at >= self._timing.twilio_idle_s and not self._watch_ended:
            # Twilio sends a frame every 20 ms: a stream silent this long is dead. Ending the call
            # closes the socket, which releases RX from its read.
            self._watch_ended = True
            self.log.warning("no frame from Twilio", extra={"for_s": self._timing.twilio_idle_s})
            self._greenlets.spawn(self.end, EndReason.TWILIO_IDLE)
            return
        if now - self._started_mono >= self._timing.max_call_s and not self._time_up:
            self._time_up = True
            self._greenlets.spawn(self._time_is_up)
        if self._conversation_watched:
            self._watchdog.check(now)
            self._realtime_watch.check(now)

    def _send_twilio(self, texts: list[str]) -> None:
        try:
            self._twilio.send(*texts)
        except (SocketClosed, OSError):
            pass  # RX sees the close and ends the call

    def _clear_twilio(self) -> None:
        self._send_twilio([tw.clear_message(self.setup.stream_sid)])

    def _send_realtime(self, text: str | bytes) -> None:
        self._realtime.send(text)

    def _next_event(self, log) -> rt.ServerEvent | None:
        try:
            return self._realtime.receive()
        except rt.ProtocolError as exc:
            log.warning("unreadable Realtime event", extra={"error": str(exc)})
            return None

    # --- the session's confirmation --------------------------------------------------------

    def _resend_session_update(self) -> None:
        if not self._session_ready.is_set() and not self._ended.is_set():
            self.log.warning("no session.updated yet: sending session.update again")
            try:
                self._send_realtime(zlib.decompress(self._session_update))
            except RealtimeClosed:
                pass

    def _session_update_timed_out(self) -> None:
        if not self._session_ready.is_set():
            self.log.error("Realtime never confirmed the session",
                           extra={"waited_s": self._timing.session_update_timeout_s})
            if self._losses:
                self._hand_over()  # the reconnect did not take
            else:
                self.end(EndReason.REALTIME_SESSION_TIMEOUT)

    def _send_late_crm(self) -> None:
        facts = self._crm.late_facts()
        message = crm_context_message(self._business, facts) if facts is not None else ""
        if message:
            self.log.info("caller context arrived after session.update: sent as a context item")
            self._send_realtime(rt.system_message(message))

    # --- the conversation ----------------------------------------------------------------

    def _on_realtime_event(self, event: rt.ServerEvent) -> None:
        self._last_event_at = self._realtime.received_at
        if self._withdrawn is not None and self._of_withdrawn_greeting(event):
            return
        if isinstance(event, rt.AudioDelta):
            self._playback.enqueue(event.response_id, event.item_id, event.audio, self._realtime.received_at)
            self._transcripts.agent_audio(event.item_id, len(event.audio))
        elif isinstance(event, rt.TranscriptDelta):
            self._transcripts.agent_delta(event.item_id, event.delta)
        elif isinstance(event, rt.AudioDone):
            self._playback.end_item(event.response_id, event.item_id)
        elif isinstance(event, rt.TranscriptDone):
            self._transcripts.agent_done(event.item_id, event.transcript)
        elif isinstance(event, rt.OutputItemAdded):
            if event.item_type == "message":
                self._transcripts.agent_item(event.response_id, event.item_id, time.time())
                self._greeting.item_added(event.response_id, event.item_id)
        elif isinstance(event, rt.ResponseCreated):
            reason = self._gate.on_created(event.response_id)
            if reason == RequestReason.CALLER_TURN:
                for item_id in self._unanswered:
                    self._answered_by[item_id] = event.response_id
                self._unanswered.clear()
            self._greeting.response_created(event.response_id, reason)
            self._ending.response_created(event.response_id, reason)
        elif isinstance(event, rt.ResponseDone):
            self._on_response_done(event)
        elif isinstance(event, rt.SpeechStarted):
            self._watchdog.heard_from_caller()
            self._transcripts.caller_started(event.item_id, time.time())
            self._barge_in.speech_started(event.item_id)
        elif isinstance(event, rt.SpeechStopped):
            self.figures.speech_stopped(time.monotonic())
            self._barge_in.speech_stopped(event.item_id)
        elif isinstance(event, rt.InputCommitted):
            self._on_input_committed(event)
        elif isinstance(event, rt.InputTranscript):
            self._on_input_transcript(event)
        elif isinstance(event, rt.ServerError):
            self.log.warning("Realtime error", extra={"code": event.code, "error": event.message})
            if event.fatal:
                raise RealtimeClosed(f"fatal error: {event.code}")
            self._withdraw_early_greeting()
        elif isinstance(event, rt.InputTranscriptFailed):
            self.log.warning("caller transcription failed", extra={"error": event.message})
            self._held_turn_heard(event.item_id, "")
            self._answered_by.pop(event.item_id, None)
            # The caller spoke there: an empty turn keeps the place (post-call analysis skips it;
            # a new session's replay does not need it).
            self._journal.add_turn("caller", "", self._transcripts.caller_started_at(event.item_id, time.time()),
                                   item_id=event.item_id)

    def _on_response_done(self, event: rt.ResponseDone) -> None:
        response_id, request = self._gate.active_request  # before `on_done` frees the gate
        self._gate.on_done(event.response_id)
        if event.usage is not None:
            self.figures.add_usage(event.usage)
        if event.status not in ("completed", "cancelled"):
            self.log.warning("response ended badly", extra={"status": event.status, "why": event.status_reason})
        # Items with audio are stored once heard (their mark comes back) or cut; an item
        # that never had audio was never heard.
        for item_id in self._transcripts.items_of(event.response_id):
            if not self._playback.has_audio(item_id):
                item = self._transcripts.take(item_id)
                if item is not None and event.status == "completed":
                    self._store_agent_item(item)
        self._ending.response_done(event.response_id, tool_calls=bool(event.function_calls))
        if event.function_calls and event.status == "completed" and not self._ended.is_set():
            self._tools.handle(event.response_id, event.function_calls, self._playback.spoke(event.response_id))
        if event.status == "completed":
            self._asked_again = False
        elif (event.status == "failed" and response_id == event.response_id and request in _ASKED_AGAIN_AFTER_FAILING
              and not self._asked_again and not self._playback.spoke(event.response_id)
              and not self._gate.is_active and not self._ended.is_set()):
            # Nothing of it reached the caller, who would hear dead air: once more (not again in
            # a row), unless a newer request has taken the gate.
            self._asked_again = True
            self.log.info("the response failed before a word: asking once more", extra={"reason": request})
            self._gate.request(request)

    def _first_frame(self, item_id: str, at: float, forwarding_ms: float | None) -> None:
        """Playback sent an item's first frame (from TX, or the Realtime greenlet's kick)."""
        greeting = self._greeting.owns(item_id)
        self.figures.agent_audio_started(item_id, at, forwarding_ms, greeting=greeting)
        self._journal.state_changed(GREETING if greeting else SPEAKING)

    def _agent_item_heard(self, item_id: str) -> None:
        """RX: the caller heard the whole item."""
        item = self._transcripts.take(item_id)
        if item is not None:
            self._store_agent_item(item)
        self._ending.item_heard(item_id)

    def _items_as_heard(self) -> list[AgentItem]:
        """The call is ending: its agent items not stored yet, as far as the caller heard each
        (from the playback clock, as barge-in cuts): one heard to its end whole, one cut short
        as cut, one never heard not at all."""
        items = []
        for item in self._transcripts.unfinished():
            if not self._playback.has_audio(item.item_id):
                continue
            heard_ms = self._playback.heard_ms(item.item_id)
            if heard_ms == 0:
                continue
            if item.final_text is None or heard_ms < item.audio_ms:
                item.heard_ms = heard_ms
            items.append(item)
        return items

    def _store_agent_item(self, item: AgentItem) -> None:
        text = item.heard_text()
        if not text and item.heard_ms is None:
            return
        self._transcripts.said("assistant", text)
        self._journal.add_turn("agent", text, item.started_at, item_id=item.item_id,
                               interrupted=item.heard_ms is not None,
                               latency_ms=self.figures.response_item_latency(item.item_id))
        if not self._playback.is_playing():  # heard or cut, with no other item of the agent's after it
            self._journal.state_changed(LISTENING)

    def _on_input_committed(self, event: rt.InputCommitted) -> None:
        turn = self._barge_in.committed(event.item_id)
        if turn is Turn.NOISE:
            self.log.info("speech during the protected greeting: no response to it")
            return
        if self._ending.forced:
            self.log.info("the call is closing: no answer to the caller's last words")
            return
        if self._machine_wait is not None and self._machine_wait.pending:
            self.log.info("still waiting for the machine detection: no answer to what was heard")
            return
        self._send_late_crm()
        self._unanswered.append(event.item_id)
        if turn is Turn.ANSWER:
            self._gate.request(RequestReason.CALLER_TURN)
        # Turn.HELD: barge-in asks for the answer if the turn is the caller's (`_answer_held_turn`).

    def _answer_held_turn(self) -> None:
        """Barge-in cut the agent for speech it had held (the Realtime greenlet or a hold timer)."""
        if not self._ending.forced:
            self._gate.request(RequestReason.CALLER_TURN)

    def _held_turn_heard(self, item_id: str, text: str) -> None:
        """The caller's transcript, to barge-in first (it may be holding the agent for it): a
        backchannel the agent goes on over waits for no answer."""
        if self._barge_in.caller_transcript(item_id, text) and item_id in self._unanswered:
            self._unanswered.remove(item_id)

    def _on_input_transcript(self, event: rt.InputTranscript) -> None:
        text = event.transcript.strip()
        self._held_turn_heard(event.item_id, text)
        started = self._transcripts.caller_started_at(event.item_id, time.time())
        if text:
            self._transcripts.said("user", text)
            self._journal.add_turn("caller", text, started, item_id=event.item_id)
        answer_id = self._answered_by.pop(event.item_id, None)
        if is_farewell(text):
            # The call ends once the agent's answer to the goodbye has been heard: that answer may
            # be under way, done already (the transcript came late), or not yet created.
            if answer_id is not None:
                self._ending.begin(EndReason.CALLER_GOODBYE, cancellable=True, response_id=answer_id,
                                   response_done=answer_id != self._gate.active_response_id)
            else:
                self._ending.begin(EndReason.CALLER_GOODBYE, cancellable=True, awaiting=RequestReason.CALLER_TURN)

    # --- call control: silence, the time limit, the keypad -----------------------------

    def _silence_does_not_count(self) -> bool:
        """The agent is speaking or about to (a response that has shown no event for a while is
        not "about to"), the caller is speaking, or the call is ending."""
        return (self._barge_in.caller_speaking or self._playback.is_playing()
                or self._realtime_watch.responding(time.monotonic())
                or self._tools.busy or self._ending.reason is not None)

    def _ask_if_still_there(self) -> None:
        self.log.info("caller silent: asking whether they are still there")
        self._tell_model(call_event("Silence check"), RequestReason.SILENCE_CHECK)

    def _give_up_on_silence(self) -> None:
        if self._ending.begin(EndReason.SILENCE, cancellable=True, awaiting=RequestReason.GOODBYE):
            self._ask_for_goodbye(call_event("Silence goodbye"))

    def _time_is_up(self) -> None:
        if self._ending.begin(EndReason.MAX_DURATION, cancellable=False, awaiting=RequestReason.GOODBYE):
            self._ask_for_goodbye(call_event("Time limit"))

    def shut_down(self) -> None:
        """The process is stopping (a deploy): a short goodbye, then the line closes; or, when the
        business asks for it, a short notice, then its person (`/webhook/stream_ended` dials).
        Not called off by the caller speaking; an ending already under way stands."""
        business = self._business
        transfer = bool(business is not None and business.transfer_on_shutdown and business.transfer_number)
        if not self._ending.begin(EndReason.SHUTDOWN, cancellable=False, awaiting=RequestReason.GOODBYE):
            return
        if transfer and self._store_transfer_to(business.transfer_number):
            self.log.info("the server is shutting down: handing the call to a person")
            self._ask_for_goodbye(call_event("Shutdown transfer"))
        else:
            self.log.info("the server is shutting down: saying goodbye")
            self._ask_for_goodbye(call_event("Shutdown"))

    def end_from_console(self) -> None:
        """Someone at the business pressed End call (services/end_requests.py): a short goodbye,
        then the line closes. Not called off by the caller speaking; an ending already under way stands."""
        if self._ending.begin(EndReason.ENDED_FROM_CONSOLE, cancellable=False, awaiting=RequestReason.GOODBYE):
            self.log.info("ended from the console: saying goodbye")
            self._ask_for_goodbye(call_event("After end_call"))

    def _ask_for_goodbye(self, notice: str) -> None:
        """The ending's last words, asked for now; while the session is being opened again,
        `_resume` asks for them once it is ready."""
        if self._ending.ask(notice, session_ready=self._session_ready.is_set()):
            self._tell_model(notice, RequestReason.GOODBYE)

    def _keypad_entered(self, digits: str) -> None:
        self.log.info("keypad", extra={"digit_count": len(digits)})  # never the digits: PINs, ID numbers
        self._watchdog.heard_from_caller()
        self._journal.add_turn("dtmf", digits, time.time())
        notice = call_event("Keypad", digits=digits)
        self._transcripts.said("user", notice)
        self._tell_model(notice, RequestReason.KEYPAD, from_caller=True)

    def _tell_model(self, text: str, request: RequestReason, *, from_caller: bool = False) -> None:
        """A notice as a conversation item (the caller's, or the server's), then a response to it."""
        try:
            self._send_realtime(rt.user_text_message(text) if from_caller else rt.system_message(text))
            self._gate.request(request)
        except RealtimeClosed:
            pass  # the Realtime greenlet ends the call

    # --- the end ---------------------------------------------------------------------

    def end(self, reason: EndReason) -> None:
        """End the call once, from any greenlet: store everything, then close the stream.

        The row is written before the stream closes, because Twilio asks
        `/webhook/stream_ended` what to do next as soon as it does.
        """
        with self._end_lock:
            if self._end_reason is not None:
                return
            self._end_reason = reason
            self._ended.set()
        self.log.info("call ending", extra={"end_reason": reason})
        try:
            self._close_down(reason)
        finally:
            self._end_done.set()

    def _close_down(self, reason: EndReason) -> None:
        """`end`'s work, once: store everything, then close the stream."""
        self._barge_in.close()
        unstored = self._items_as_heard()  # first: the playback clock runs on after a hang-up
        self._playback.stop()
        self._services.call_watch.unwatch(self.setup.call_sid)
        self._greenlets.close()
        self._ending.close()
        self._keypad.close()
        if self._tools is not None:
            self._tools.close()
        self._realtime.close()
        for item in unstored:
            self._store_agent_item(item)
        if self._crm is not None:
            self._crm.close()
        playback = self._playback
        figures, usage, cost = self.figures.summary(playback.frames_out, playback.frames_dropped,
                                                    playback.lateness_ms, self._realtime_settings.model)
        self._journal.finish(reason, time.time(), figures, usage, cost)
        self._journal.close()
        metrics.CALLS_ENDED.labels(reason).inc()
        self.log.info("call ended", extra={"end_reason": reason, "frames_in": figures["frames_in"],
                                           "frames_out": figures["frames_out"],
                                           "greeting_ms": figures["greeting_latency_ms"]})
        self._twilio.close(1000)
