"""Signs of life from the Realtime API, for one call.

A socket that has sent nothing for `realtime_ping_after_s` is pinged; one that still sends
nothing (no pong, no event) `realtime_pong_timeout_s` later is taken for dropped: it is closed,
and the call's Realtime greenlet, whose read then fails, reconnects. A response that has shown
no event for `response_stall_s` since it was asked for (or since its last event) is given up:
the gate is freed, the response cancelled, and the stall counted.
"""
from __future__ import annotations

import logging
from typing import Callable

from gevent.event import Event

from services import metrics
from services import realtime_protocol as rt
from services.call_figures import CallFigures
from services.realtime_client import RealtimeClosed, RealtimeConnection
from services.response_gate import ResponseGate
from services.settings import CallTiming


class RealtimeWatch:
    """Looked at by the call watch (`check`, from its greenlet) once the call's first words are
    asked for. It reads the call's connection and last event time through the callables given
    (the Realtime greenlet replaces the one and writes the other); what may block (a ping, a
    close, a cancel) it hands to `spawn`, the call's greenlets."""

    def __init__(self, *, connection: Callable[[], RealtimeConnection], last_event_at: Callable[[], float],
                 gate: ResponseGate, figures: CallFigures, timing: CallTiming, session_ready: Event,
                 ended: Event, spawn: Callable[..., object], log: logging.LoggerAdapter):
        self._connection = connection
        self._last_event_at = last_event_at
        self._gate = gate
        self._figures = figures
        self._timing = timing
        self._session_ready = session_ready
        self._ended = ended
        self._spawn = spawn
        self._log = log
        # The watch greenlet's own: the connection pinged while it stays quiet, and when; the
        # response given up on (its `active_since`), so that it is given up once.
        self._pinged: RealtimeConnection | None = None
        self._pinged_at = 0.0
        self._given_up: float | None = None

    def responding(self, now: float) -> bool:
        """A response is under way and has not stalled."""
        return self._response_alive(now) is True

    def _response_alive(self, now: float) -> bool | None:
        """None when no response is active; else whether it has shown an event (or was asked
        for) within `response_stall_s`."""
        since = self._gate.active_since
        if since is None:
            return None
        return now - max(since, self._last_event_at()) < self._timing.response_stall_s

    def check(self, now: float) -> None:
        if self._ended.is_set():
            return
        if not self._session_ready.is_set():  # being opened: its own deadlines run
            self._pinged = None
            return
        timing, conn = self._timing, self._connection()
        if now - conn.heard_at < timing.realtime_ping_after_s:
            self._pinged = None
        elif self._pinged is not conn:
            self._pinged, self._pinged_at = conn, now
            self._spawn(conn.ping)
        elif now - self._pinged_at >= timing.realtime_pong_timeout_s:
            self._log.warning("the Realtime socket answers no ping: taking it for dropped",
                              extra={"quiet_s": round(now - conn.heard_at, 1)})
            self._pinged = None
            self._spawn(conn.close)
            return
        since = self._gate.active_since
        if self._response_alive(now) is False and since != self._given_up:
            self._given_up = since
            self._spawn(self._give_up_on_response, conn)

    def _give_up_on_response(self, conn: RealtimeConnection) -> None:
        response_id = self._gate.abandon()
        if response_id is None:
            return  # it ended meanwhile
        self._figures.response_stalls += 1
        metrics.RESPONSE_STALLS.inc()
        self._log.warning("response stalled: cancelled", extra={"response_id": response_id})
        try:
            conn.send(rt.response_cancel())
        except RealtimeClosed:
            pass
