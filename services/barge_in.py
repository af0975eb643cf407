"""Barge-in: the caller talks over the agent.

Server VAD reports speech but never cancels a response itself; this module decides. Speech
while the agent is audible (or a response is under way) cuts it: clear what Twilio has queued,
cancel the response, truncate the item at what the caller heard, store the heard part as an
interrupted turn, and tell the ending (a goodbye the caller talks over is called off). Inside
the greeting's protected start, speech must outlast a noise burst first: a burst is over
(`speech_stopped`) within the VAD's silence window after it ends, so speech still going on
after both the protected start and that window is real, and cuts the greeting then. A burst
that ends sooner gets no answer: its committed input is ignored (`is_noise`).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from services import realtime_protocol as rt
from services.call_ending import CallEnding
from services.call_figures import CallFigures
from services.greeting import Greeting
from services.playback import Playback
from services.realtime_client import RealtimeClosed
from services.response_gate import ResponseGate
from services.transcripts import AgentItem, Transcripts


class BargeIn:
    """Speech events come from the Realtime greenlet; a protected start is decided by a guard
    timer greenlet (spawned through `spawn_later`); the silence watchdog reads `caller_speaking`."""

    def __init__(self, *, playback: Playback, gate: ResponseGate, greeting: Greeting, transcripts: Transcripts,
                 figures: CallFigures, ending: CallEnding, clear_twilio: Callable[[], None],
                 send_realtime: Callable[[str], None], store_item: Callable[[AgentItem], None],
                 spawn_later: Callable[..., object], noise_max_ms: int, log: logging.LoggerAdapter):
        self._playback = playback
        self._gate = gate
        self._greeting = greeting
        self._transcripts = transcripts
        self._figures = figures
        self._ending = ending
        self._clear_twilio = clear_twilio
        self._send_realtime = send_realtime
        self._store_item = store_item
        self._spawn_later = spawn_later
        self._noise_max_ms = noise_max_ms
        self._log = log
        # Guards: _caller_speaking, _protected_speech, _ignore_commit, _closed, and serialises
        # cuts: it is held across a cut's socket writes, so two cuts never interleave. Written by
        # the Realtime greenlet and the guard timer; read by the silence watchdog.
        self._lock = threading.Lock()
        self._caller_speaking = False
        self._protected_speech: str | None = None  # the speech item waiting out the protected start
        self._ignore_commit: str | None = None  # a noise burst's item: no answer to it
        self._closed = False

    @property
    def caller_speaking(self) -> bool:
        with self._lock:
            return self._caller_speaking

    def speech_started(self, item_id: str) -> None:
        speech_at = time.monotonic()
        with self._lock:
            self._caller_speaking = True
            if self._closed or not self._agent_audible():
                return
            protected_ms = self._greeting.protection_left_ms()
            if protected_ms > 0:
                decide_in_ms = max(protected_ms, rt.VAD_SILENCE_MS + self._noise_max_ms)
                self._protected_speech = item_id
                self._spawn_later(decide_in_ms / 1000, self._protection_over, item_id)
                return
            self._cut(speech_at)

    def speech_stopped(self, item_id: str) -> None:
        with self._lock:
            self._caller_speaking = False
            if self._protected_speech == item_id:
                self._protected_speech = None
                self._ignore_commit = item_id

    def is_noise(self, item_id: str) -> bool:
        """The committed input was a noise burst over the protected greeting (asked once)."""
        with self._lock:
            noise = self._ignore_commit == item_id
            self._ignore_commit = None
            return noise

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
            self._protected_speech = self._ignore_commit = None
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
            if self._caller_speaking and self._agent_audible():
                try:
                    self._cut(time.monotonic())
                except RealtimeClosed:
                    pass  # the Realtime greenlet sees the drop and ends the call

    def _agent_audible(self) -> bool:
        return self._playback.is_playing() or self._gate.is_active

    def _cut(self, speech_at: float) -> None:
        """Silence the agent, cancel its response, tell the model what was heard. Under `_lock`."""
        active = self._gate.active_response_id
        heard = self._playback.clear(mute=(active,) if active else ())
        if heard is not None:
            self._clear_twilio()
            self._figures.barge_in((time.monotonic() - speech_at) * 1000)
        if self._gate.is_active:
            self._gate.drop_pending()
            self._send_realtime(rt.response_cancel())
        if heard is not None:
            self._send_realtime(rt.item_truncate(heard.item_id, heard.heard_ms))
            cut = self._transcripts.take_cut(heard.item_id, heard.heard_ms)
            if cut is not None:
                self._store_item(cut)
        self._log.info("barge-in", extra={"item_id": heard.item_id if heard else None,
                                          "heard_ms": heard.heard_ms if heard else None})
        self._ending.interrupted()
