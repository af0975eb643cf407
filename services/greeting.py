"""The greeting: the agent speaks first, exactly once, and line noise does not cut it.

It is asked for once, right behind the `session.update` (the API applies a session's events in
order, so it is spoken under that configuration), or once the session is confirmed. The
response that answers that request, and that response's first message item, are the greeting:
the figures time the call's greeting latency from the item's first frame (`owns`), and barge-in
asks how much longer the greeting is protected (`protection_left_ms`): inside its first
`protect_ms`, caller "speech" may be a click or a breath on the line, and must outlast a noise
burst before it cuts the greeting.
"""
from __future__ import annotations

import threading

from services.playback import Playback
from services.response_gate import RequestReason, ResponseGate


class Greeting:
    def __init__(self, gate: ResponseGate, playback: Playback, protect_ms: int):
        self._gate = gate
        self._playback = playback
        self._protect_ms = protect_ms
        # Guards: _requested, _response_id, _item_id. Written by the Realtime greenlet (request,
        # created, item added); read by barge-in's guard timer and by TX (first frames). Never
        # held while another lock is taken.
        self._lock = threading.Lock()
        self._requested = False
        self._response_id: str | None = None
        self._item_id: str | None = None

    def request(self, instructions: str) -> None:
        """Ask for the greeting; a second call does nothing (a greeting is never doubled)."""
        with self._lock:
            if self._requested:
                return
            self._requested = True
        self._gate.request(RequestReason.GREETING, instructions)

    def withdraw(self) -> None:
        """It was asked for right behind a `session.update` that the API then refused: its
        response is cancelled unheard, and it is asked for again once a session is confirmed."""
        with self._lock:
            self._requested = False
            self._response_id = self._item_id = None

    def response_created(self, response_id: str, reason: RequestReason | None) -> None:
        if reason != RequestReason.GREETING:
            return
        with self._lock:
            if self._response_id is None:
                self._response_id = response_id

    def item_added(self, response_id: str, item_id: str) -> None:
        with self._lock:
            if response_id == self._response_id and self._item_id is None:
                self._item_id = item_id

    def owns(self, item_id: str) -> bool:
        """The item is the greeting (its first frame is the call's greeting latency)."""
        with self._lock:
            return item_id == self._item_id

    def protection_left_ms(self) -> int:
        """How much longer the greeting is protected from line noise; 0 when it is not playing."""
        with self._lock:
            requested, item_id = self._requested, self._item_id
        if item_id is None or not self._playback.has_audio(item_id):
            # Asked for and not yet begun (its item may be announced before any audio): the caller
            # has heard nothing of it, all is protected.
            return self._protect_ms if requested and self._gate.is_active else 0
        if self._playback.playing_item() != item_id:
            return 0
        return max(0, self._protect_ms - self._playback.heard_ms(item_id))
