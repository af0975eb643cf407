"""Ending a call politely: the agent's last words are heard to the end, then the line closes.

An ending starts with an `EndReason` (agent hang-up, caller goodbye, transfer, silence, the time
limit) and the response that carries the agent's last words: one already spoken, or the next one
created for a given `RequestReason` (goodbye, tool result, caller turn). Once that
response is done, the call ends when the caller has heard each of its items (their marks are
echoed), or at once if it had no audio; a deadline ends it anyway.

If the caller speaks over the last words, a cancellable ending is called off (they had more to
say); the others (time limit, transfer) end the call at once.

If the Realtime session is lost before the last words are all in (`line_lost`), they are asked
for again on the new one (`ask_again`); once they are in, they play out without a model.
"""
from __future__ import annotations

import logging
import re
import threading
from typing import Callable

import gevent

from services.playback import Playback
from services.response_gate import RequestReason
from services.store.end_reasons import EndReason

# Said by a caller who is leaving, matched as whole words ("ולהתראות" too) in a short utterance
# without a question. Not "יום טוב" or "ערב טוב": callers open calls with them as often.
_FAREWELLS = (("להתראות",), ("ביי",), ("bye",), ("goodbye",), ("נתראה",), ("לילה", "טוב"), ("lehitraot",))
_FAREWELL_MAX_WORDS = 6


def is_farewell(text: str) -> bool:
    """The caller says goodbye: a short utterance with a farewell in it, and no question."""
    if "?" in text:
        return False
    words = [w[1:] if w.startswith("ו") and len(w) > 2 else w for w in re.findall(r"\w+", text.casefold())]
    if not words or len(words) > _FAREWELL_MAX_WORDS:
        return False
    return any(words[i:i + len(phrase)] == list(phrase) for phrase in _FAREWELLS for i in range(len(words)))


class CallEnding:
    """Any greenlet may `begin` an ending; the Realtime greenlet reports responses, RX reports items
    heard, barge-in reports interruptions, and the deadline greenlet times out. Its lock is taken
    while barge-in holds its own (`interrupted`) and never while a socket is written."""

    def __init__(self, playback: Playback, end: Callable[[EndReason], None], timeout_s: float, log: logging.LoggerAdapter):
        self._playback = playback
        self._end = end
        self._timeout_s = timeout_s
        self._log = log
        # Guards every field below. Written by whoever begins, the Realtime greenlet (responses),
        # RX (items heard), barge-in and the deadline.
        self._lock = threading.Lock()
        self._reason: EndReason | None = None
        self._cancellable = False
        self._awaiting: RequestReason | None = None  # the request whose response carries the last words
        self._response_id: str | None = None  # that response, once known
        self._unheard: set[str] | None = None  # its items still to be heard; None until it is done
        self._notice: str | None = None  # what the model is told to say them, to ask again
        self._asked = False  # the words need no request from the ending on this session (made, or another's)
        self._generation = 0  # a deadline or finish of a called-off ending must not end the call
        self._deadline: gevent.Greenlet | None = None

    @property
    def reason(self) -> EndReason | None:
        with self._lock:
            return self._reason

    @property
    def forced(self) -> bool:
        """An ending the caller cannot call off (time limit, transfer) is under way."""
        with self._lock:
            return self._reason is not None and not self._cancellable

    def begin(self, reason: EndReason, *, cancellable: bool, awaiting: RequestReason | None = None,
              response_id: str | None = None, response_done: bool = False, notice: str | None = None) -> bool:
        """End the call after response `response_id`, or after the next response created for the
        request `awaiting`: a GOODBYE request is the ending's own (`ask`), any other is made by
        whoever answers the caller or the tool. `response_done`: that response is already done
        (the caller's goodbye was transcribed after its answer): the call ends once its items
        still unheard are heard, or now. `notice`: what the model is told to say the last words,
        should they have to be asked for again. False when an ending is already under way (the
        first one stands)."""
        finish = None
        with self._lock:
            if self._reason is not None:
                return False
            self._reason, self._cancellable = reason, cancellable
            self._awaiting, self._response_id, self._unheard = awaiting, response_id, None
            self._notice, self._asked = notice, awaiting != RequestReason.GOODBYE
            self._generation += 1
            self._deadline = gevent.spawn_later(self._timeout_s, self._timed_out, self._generation)
            if response_done and response_id is not None:
                self._unheard = set(self._playback.unheard_items(response_id))
                finish = self._generation if not self._unheard else None
        self._log.info("call ending after the agent's last words", extra={"end_reason": reason})
        if finish is not None:
            self._finish(finish)
        return True

    def ask(self, notice: str, *, session_ready: bool) -> bool:
        """The goodbye is asked for with `notice` (kept, to ask again on a new session). True when
        the caller is to send it now: the session is ready and it has not been asked for on it."""
        with self._lock:
            if self._reason is None:
                return False
            self._notice = notice
            return session_ready and self._claim()

    def ask_again(self, default_notice: str) -> str | None:
        """A new session is ready: the notice to ask for the goodbye with (the ending's own, else
        `default_notice`), once; None when no words are wanted from it."""
        with self._lock:
            return (self._notice or default_notice) if self._claim() else None

    def line_lost(self) -> bool:
        """The Realtime session is gone. True when the last words are all in (the audio of their
        response, done): they play out and the call ends, with no new session. Otherwise the
        response awaited died with the session: the words are asked for again on the next one."""
        with self._lock:
            if self._reason is None:
                return False
            if self._unheard is not None:
                return True
            self._awaiting, self._response_id, self._asked = RequestReason.GOODBYE, None, False
            return False

    def _claim(self) -> bool:
        """Under `_lock`: the goodbye is to be asked for now (once per session)."""
        if self._reason is None or self._asked or self._response_id is not None or self._unheard is not None:
            return False
        self._asked = True
        return True

    def response_created(self, response_id: str, request_reason: RequestReason | None) -> None:
        with self._lock:
            if self._reason is not None and self._response_id is None and request_reason == self._awaiting:
                self._response_id = response_id

    def response_done(self, response_id: str, *, tool_calls: bool) -> None:
        """The awaited response is complete: wait for its audio to be heard, or end now."""
        with self._lock:
            if self._reason is None or response_id != self._response_id or self._unheard is not None:
                return
            if tool_calls and not self._playback.spoke(response_id):
                # It answered with a tool call (e.g. end_call): the words come with the tool's result.
                self._awaiting, self._response_id = RequestReason.TOOL_RESULT, None
                return
            self._unheard = set(self._playback.unheard_items(response_id))
            generation = self._generation if not self._unheard else None
        if generation is not None:
            self._finish(generation)

    def item_heard(self, item_id: str) -> None:
        """RX: the caller heard an item to its end."""
        with self._lock:
            if self._unheard is None or item_id not in self._unheard:
                return
            self._unheard.discard(item_id)
            generation = self._generation if not self._unheard else None
        if generation is not None:
            self._finish(generation)

    def interrupted(self) -> None:
        """Barge-in (under its lock): never ends the call from here, where sockets are being written."""
        with self._lock:
            if self._reason is None:
                return
            if not self._cancellable:
                generation = self._generation
            else:
                self._log.info("caller spoke over the goodbye: the call goes on", extra={"end_reason": self._reason})
                self._reason = self._awaiting = self._response_id = self._unheard = self._notice = None
                self._generation += 1
                deadline, self._deadline = self._deadline, None
                if deadline is not None:
                    deadline.kill(block=False)
                return
        gevent.spawn(self._finish, generation)

    def close(self) -> None:
        with self._lock:
            deadline, self._deadline = self._deadline, None
        if deadline is not None and deadline is not gevent.getcurrent():
            deadline.kill(block=False)

    def _timed_out(self, generation: int) -> None:
        self._log.warning("the goodbye was not heard in time: closing anyway", extra={"waited_s": self._timeout_s})
        self._finish(generation)

    def _finish(self, generation: int) -> None:
        with self._lock:
            if generation != self._generation or self._reason is None:
                return
            reason = self._reason
        self._end(reason)
