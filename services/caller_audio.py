"""The caller's audio on its way to the model: RX's hot path, one call per 20 ms frame."""
from __future__ import annotations

from typing import Callable

from gevent.event import Event

from services import realtime_protocol as rt
from services.call_figures import CallFigures
from services.realtime_client import RealtimeClosed

# Caller audio held while a Realtime session is being configured or opened again (3 s).
HELD_FRAMES = 150


class CallerAudio:
    """Only RX calls `forward`. Frames go straight to the Realtime session while it is ready.
    They are held, in order, the latest `HELD_FRAMES`, while it is not (being configured, or
    opened again after a loss), and from the frame that meets a session that has just closed
    (RealtimeClosed before the Realtime greenlet has seen the loss and cleared `ready`); the
    held frames go first, each once, when a session is ready."""

    def __init__(self, send: Callable[[str], None], ready: Event, figures: CallFigures):
        self._send = send
        self._ready = ready
        self._figures = figures
        self._held: list[str] = []  # held rarely and briefly: a list, not a deque's 0.75 KB

    def forward(self, payload: str) -> None:
        if not self._ready.is_set():
            self._hold(payload)
        elif not self._held:
            try:
                self._send(rt.audio_append(payload))
                self._figures.frames_in += 1
            except RealtimeClosed:
                self._hold(payload)
        else:
            self._hold(payload)
            self._send_held()

    def _hold(self, payload: str) -> None:
        held = self._held
        held.append(payload)
        if len(held) > HELD_FRAMES:
            del held[0]
            self._figures.drop_rx("session_not_ready")

    def _send_held(self) -> None:
        """Oldest first; a frame leaves the hold once sent, so a session lost part-way gets
        each frame once and the next one the rest."""
        held, send, figures = self._held, self._send, self._figures
        sent = 0
        try:
            for payload in held:
                send(rt.audio_append(payload))
                sent += 1
                figures.frames_in += 1
        except RealtimeClosed:
            pass  # the rest still held, for the next session
        finally:
            del held[:sent]
