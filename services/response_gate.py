"""The one way a response starts: no response before the session is configured, and
never two at once."""
from __future__ import annotations

import logging
import threading
import time
from enum import StrEnum
from typing import Callable

from services import realtime_protocol


class RequestReason(StrEnum):
    """Why a response was asked for; the ending and the figures tell responses apart by it."""

    GREETING = "greeting"
    CALLER_TURN = "caller_turn"
    TOOL_RESULT = "tool_result"  # the model speaks about a tool's result
    GOODBYE = "goodbye"  # the call is ending: silence, the time limit
    SILENCE_CHECK = "silence_check"
    KEYPAD = "keypad"
    RESUME = "resume"  # after a reconnect: the agent apologises for the break and goes on


class ResponseGate:
    """Shut until `open()` (after `session.updated`, or right behind the first `session.update`
    for the greeting: services/call_session.py); then at most one response active.

    A request made while one is active waits in a single slot (a newer request replaces
    it) and is sent when the active response is done. Each request has a `RequestReason`;
    `on_created` says which request a response answers.
    """

    def __init__(self, send: Callable[[str], None], log: logging.LoggerAdapter):
        self._send = send
        self._log = log
        # Guards: _open, _active, _response_id, _reason, _pending. Requests come from the Realtime
        # greenlet, tool greenlets and timers; created/done from the Realtime greenlet. Held
        # across the send of `response.create`, so that a barge-in's `response.cancel` (sent
        # after asking `is_active`) can never reach the socket before the create it cancels.
        self._lock = threading.Lock()
        self._open = False
        self._active = False  # response.create sent and its response.done not yet seen
        self._response_id: str | None = None
        self._reason: RequestReason | None = None  # the request the active response answers
        self._pending: tuple[RequestReason, str | None] | None = None
        self._requested_at = 0.0  # monotonic time of the active response's response.create

    def open(self) -> None:
        with self._lock:
            self._open = True
            self._fire_pending()

    @property
    def active_response_id(self) -> str | None:
        with self._lock:
            return self._response_id if self._active else None

    @property
    def active_request(self) -> tuple[str | None, RequestReason | None]:
        """(response id, request reason) of the active response; (None, None) when idle."""
        with self._lock:
            return (self._response_id, self._reason) if self._active else (None, None)

    @property
    def active_since(self) -> float | None:
        """When the active response was asked for (monotonic); None when idle."""
        with self._lock:
            return self._requested_at if self._active else None

    @property
    def is_active(self) -> bool:
        with self._lock:
            return self._active

    def request(self, reason: RequestReason, instructions: str | None = None) -> bool:
        """Start a response now if allowed, else keep it for when it is. True if sent now."""
        with self._lock:
            if not self._open or self._active:
                self._pending = (reason, instructions)
                return False
            self._create(reason, instructions)
            return True

    def drop_pending(self) -> None:
        with self._lock:
            self._pending = None

    def shut(self) -> None:
        """The Realtime session is gone: nothing is active or pending, and nothing starts until
        `open()` (after the new session is confirmed)."""
        with self._lock:
            self._open = self._active = False
            self._response_id = self._reason = self._pending = None

    def abandon(self) -> str | None:
        """Give up on the active response (it stalled): the gate is free again. Returns its id."""
        with self._lock:
            if not self._active:
                return None
            response_id = self._response_id
            self._active = False
            self._response_id = self._reason = None
            self._fire_pending()
            return response_id

    def on_created(self, response_id: str) -> RequestReason | None:
        """The response has started; returns the reason of the request it answers."""
        with self._lock:
            if self._response_id != response_id and self._response_id is not None:
                self._reason = None  # not the one we asked for
            self._active = True
            self._response_id = response_id
            return self._reason

    def on_done(self, response_id: str) -> None:
        with self._lock:
            if self._response_id not in (None, response_id):
                return  # a stale done: the active response is another one
            self._active = False
            self._response_id = None
            self._reason = None
            self._fire_pending()

    def _create(self, reason: RequestReason, instructions: str | None) -> None:
        self._active = True
        self._response_id = None
        self._reason = reason
        self._requested_at = time.monotonic()
        self._log.info("response.create", extra={"reason": reason})
        self._send(realtime_protocol.response_create(instructions))

    def _fire_pending(self) -> None:
        if self._open and not self._active and self._pending is not None:
            reason, instructions = self._pending
            self._pending = None
            self._create(reason, instructions)
