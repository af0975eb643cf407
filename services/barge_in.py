"""Barge-in: the caller talks over the agent.

Server VAD reports speech but never cancels or starts a response itself; this module decides, by
the business's mode:

- `hold` (the default): speech over the agent holds it at once (TX sends nothing more; what Twilio
  has queued, under 100 ms, plays out; the response goes on filling the queue). Speech that stops
  within `hold_ms` (its `speech_stopped`, which comes the VAD's silence window after the speech
  ends) and whose transcript, waited for at most `transcript_wait_ms` after that, is empty or a
  backchannel (services/backchannel.py) lets the agent go on where the caller stopped hearing it:
  no clear, no cancel, no truncate, and no answer to it. Anything else cuts, as `immediate` does:
  longer speech, more speech, a transcript with words that take the turn, or no transcript in
  time. The held turn's answer is asked for once it cuts (`answer_turn`).
- `immediate`: speech cuts at once: clear what Twilio has queued, cancel the response, truncate
  the item at what the caller heard, store the heard part as an interrupted turn.
- `off`: never cut; the caller's words are answered after the agent's.

A cut tells the ending (a goodbye the caller talks over is called off). Inside the greeting's
protected start, speech must outlast a noise burst first: a burst is over (`speech_stopped`)
within the VAD's silence window after it ends, so speech still going on after both the protected
start and that window is real, and cuts the greeting then (in any mode but `off`). A burst that
ends sooner gets no answer: its committed input is ignored.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from enum import Enum
from typing import Callable, Iterable

from services import backchannel
from services import realtime_protocol as rt
from services.call_ending import CallEnding
from services.call_figures import CallFigures
from services.greeting import Greeting
from services.playback import Playback
from services.realtime_client import RealtimeClosed
from services.response_gate import ResponseGate
from services.store.models import BARGE_IN_MODES
from services.transcripts import AgentItem, Transcripts

DEFAULT_MODE = "hold"


class Turn(Enum):
    """What to do with the caller's committed input (`committed`)."""

    ANSWER = "answer"
    NOISE = "noise"  # a burst over the protected greeting: no answer
    HELD = "held"  # barge-in decides: it asks for the answer if it cuts, a backchannel gets none


@dataclass(eq=False)
class _Hold:
    """The caller's speech the agent is held for; it is the hold's own (timers compare by identity)."""

    item_id: str
    speech_at: float  # monotonic: when its speech_started was read
    stopped: bool = False
    committed: bool = False


class BargeIn:
    """Speech events and transcripts come from the Realtime greenlet; a protected start and a hold
    are decided by timer greenlets too (spawned through `spawn_later`); the silence watchdog reads
    `caller_speaking`. `configure` runs on RX while the call is set up, before any of them."""

    def __init__(self, *, playback: Playback, gate: ResponseGate, greeting: Greeting, transcripts: Transcripts,
                 figures: CallFigures, ending: CallEnding, clear_twilio: Callable[[], None],
                 send_realtime: Callable[[str], None], store_item: Callable[[AgentItem], None],
                 answer_turn: Callable[[], None], spawn_later: Callable[..., object], noise_max_ms: int,
                 hold_ms: int, transcript_wait_ms: int, log: logging.LoggerAdapter):
        self._playback = playback
        self._gate = gate
        self._greeting = greeting
        self._transcripts = transcripts
        self._figures = figures
        self._ending = ending
        self._clear_twilio = clear_twilio
        self._send_realtime = send_realtime
        self._store_item = store_item
        self._answer_turn = answer_turn
        self._spawn_later = spawn_later
        self._noise_max_ms = noise_max_ms
        self._hold_ms = hold_ms
        self._transcript_wait_ms = transcript_wait_ms
        self._log = log
        self._mode = DEFAULT_MODE
        self._words = backchannel.DEFAULT_SET
        # Guards: _caller_speaking, _protected_speech, _ignore_commit, _hold, _closed, and serialises
        # decisions: it is held across a cut's or a resume's socket writes, so two never interleave.
        # Written by the Realtime greenlet and the timers; read by the silence watchdog.
        self._lock = threading.Lock()
        self._caller_speaking = False
        self._protected_speech: str | None = None  # the speech item waiting out the protected start
        self._ignore_commit: str | None = None  # a noise burst's item: no answer to it
        self._hold: _Hold | None = None
        self._closed = False

    def configure(self, mode: str, extra_words: Iterable[str]) -> None:
        """The business's mode and its own backchannel words (RX, while the call is set up)."""
        if mode not in BARGE_IN_MODES:
            self._log.warning("unknown barge-in mode stored: using the default", extra={"mode": mode[:20],
                                                                                        "default": DEFAULT_MODE})
            mode = DEFAULT_MODE
        self._mode = mode
        words = [word for word in extra_words or () if isinstance(word, str)]
        self._words = backchannel.word_set(words) if words else backchannel.DEFAULT_SET

    @property
    def caller_speaking(self) -> bool:
        with self._lock:
            return self._caller_speaking

    def speech_started(self, item_id: str) -> None:
        speech_at = time.monotonic()
        with self._lock:
            self._caller_speaking = True
            if self._closed:
                return
            if self._hold is not None:
                self._log.info("barge-in: more speech while the agent is held")
                self._cut_held()
                return
            if not self._agent_audible():
                return
            protected_ms = self._greeting.protection_left_ms()
            if protected_ms > 0:
                decide_in_ms = max(protected_ms, rt.VAD_SILENCE_MS + self._noise_max_ms)
                self._protected_speech = item_id
                self._spawn_later(decide_in_ms / 1000, self._protection_over, item_id)
                return
            if self._mode == "immediate":
                self._cut(speech_at)
            elif self._mode == "hold":
                self._start_hold(item_id, speech_at)

    def speech_stopped(self, item_id: str) -> None:
        with self._lock:
            self._caller_speaking = False
            if self._protected_speech == item_id:
                self._protected_speech = None
                self._ignore_commit = item_id
            hold = self._hold
            if hold is not None and hold.item_id == item_id and not hold.stopped:
                hold.stopped = True
                self._spawn_later(self._transcript_wait_ms / 1000, self._transcript_overdue, hold)

    def committed(self, item_id: str) -> Turn:
        """The caller's input was committed: answer it, or not (asked once per item)."""
        with self._lock:
            noise = self._ignore_commit == item_id
            self._ignore_commit = None
            if noise:
                return Turn.NOISE
            if self._hold is not None and self._hold.item_id == item_id:
                self._hold.committed = True
                return Turn.HELD
            return Turn.ANSWER

    def caller_transcript(self, item_id: str, text: str) -> bool:
        """The caller's transcript (empty when its transcription failed). True when the agent was
        held for it and goes on: the turn was a backchannel, and gets no answer."""
        with self._lock:
            hold = self._hold
            if hold is None or hold.item_id != item_id or self._closed:
                return False
            if backchannel.is_backchannel(text, self._words):
                self._resume()
                return True
            self._log.info("barge-in: the caller takes the turn")
            self._cut_held()
            return False

    def line_lost(self) -> bool:
        """The Realtime session is gone mid-call: stop what the caller hears of the agent and
        store the part heard (the model is told it on the new session). True if the agent was
        speaking or about to."""
        with self._lock:
            was_speaking = self._agent_audible()
            active = self._gate.active_response_id
            heard = self._playback.clear(mute=(active,) if active else ())
            if heard is not None:
                self._clear_twilio()
                cut = self._transcripts.take_cut(heard.item_id, heard.heard_ms)
                if cut is not None:
                    self._store_item(cut)
            self._caller_speaking = False
            self._protected_speech = self._ignore_commit = self._hold = None
            return was_speaking

    def close(self) -> None:
        """The call is ending: no more cuts."""
        with self._lock:
            self._closed = True

    def _protection_over(self, item_id: str) -> None:
        """Guard timer: speech still going on after the protected start is real, and cuts."""
        with self._lock:
            if self._protected_speech != item_id or self._closed:
                return
            # Speech that began before the greeting's audio is judged once the protection, counted
            # from the audio's start, is over: until then it has not talked over anything heard.
            left_ms = self._greeting.protection_left_ms()
            if left_ms > 0 and self._caller_speaking:
                self._spawn_later(left_ms / 1000, self._protection_over, item_id)
                return
            self._protected_speech = None
            if self._caller_speaking and self._agent_audible() and self._mode != "off":
                try:
                    self._cut(time.monotonic())
                except RealtimeClosed:
                    pass  # the Realtime greenlet sees the drop and ends the call

    def _speech_too_long(self, hold: _Hold) -> None:
        """Hold timer: the speech has not stopped within the bound: the caller takes the turn."""
        with self._lock:
            if self._hold is not hold or hold.stopped or self._closed:
                return
            self._log.info("barge-in: the caller speaks on", extra={"hold_ms": self._hold_ms})
            try:
                self._cut_held()
            except RealtimeClosed:
                pass

    def _transcript_overdue(self, hold: _Hold) -> None:
        """Hold timer: no transcript in time: the speech is taken for words, and cuts."""
        with self._lock:
            if self._hold is not hold or self._closed:
                return
            self._log.info("barge-in: no transcript in time", extra={"waited_ms": self._transcript_wait_ms})
            try:
                self._cut_held()
            except RealtimeClosed:
                pass

    def _agent_audible(self) -> bool:
        return self._playback.is_playing() or self._gate.is_active

    def _start_hold(self, item_id: str, speech_at: float) -> None:
        """Under `_lock`."""
        self._playback.hold()
        self._hold = hold = _Hold(item_id=item_id, speech_at=speech_at)
        self._figures.barge_in((time.monotonic() - speech_at) * 1000)
        self._figures.barge_in_held()
        # Speech that has lasted `hold_ms` is reported stopped a silence window after it ends at the earliest.
        self._spawn_later((self._hold_ms + rt.VAD_SILENCE_MS) / 1000, self._speech_too_long, hold)
        self._log.info("barge-in: agent held")

    def _resume(self) -> None:
        """The held agent goes on. Under `_lock`."""
        self._hold = None
        silence_ms = self._playback.resume()
        self._figures.barge_in_resumed(silence_ms)
        self._log.info("barge-in: a backchannel: the agent goes on",
                       extra={"silence_ms": None if silence_ms is None else round(silence_ms)})

    def _cut_held(self) -> None:
        """The held speech takes the turn: cut, then ask for its answer if it is in. Under `_lock`."""
        hold, self._hold = self._hold, None
        self._cut(hold.speech_at, timed=False)
        if hold.committed:
            self._answer_turn()

    def _cut(self, speech_at: float, *, timed: bool = True) -> None:
        """Silence the agent, cancel its response, tell the model what was heard. Under `_lock`.
        `timed`: the agent falls silent now (a held one fell silent at the hold, timed there)."""
        active = self._gate.active_response_id
        heard = self._playback.clear(mute=(active,) if active else ())
        if heard is not None:
            self._clear_twilio()
            if timed:
                self._figures.barge_in((time.monotonic() - speech_at) * 1000)
        if self._gate.is_active:
            self._gate.drop_pending()
            self._send_realtime(rt.response_cancel())
        if heard is not None:
            self._send_realtime(rt.item_truncate(heard.item_id, heard.heard_ms))
            cut = self._transcripts.take_cut(heard.item_id, heard.heard_ms)
            if cut is not None:
                self._store_item(cut)
        self._figures.barge_in_cut()
        self._log.info("barge-in", extra={"item_id": heard.item_id if heard else None,
                                          "heard_ms": heard.heard_ms if heard else None})
        self._ending.interrupted()
