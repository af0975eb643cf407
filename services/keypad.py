"""Keypad digits (DTMF) the caller presses, handed on as one entry per burst.

Twilio reports each digit alone; digits pressed within `gap_s` of each other ("1", "2", "3")
are one entry ("123"), handed to `entered` by a timer greenlet. "#" ends an entry at once.
"""
from __future__ import annotations

import threading
from typing import Callable

import gevent


class Keypad:
    def __init__(self, gap_s: float, entered: Callable[[str], None]):
        self._gap_s = gap_s
        self._entered = entered
        # Guards: _digits, _timer. Written by RX (press) and the timer greenlet (flush).
        self._lock = threading.Lock()
        self._digits: list[str] = []
        self._timer: gevent.Greenlet | None = None

    def press(self, digit: str) -> None:
        with self._lock:
            self._digits.append(digit)
            if self._timer is not None:
                self._timer.kill(block=False)
            self._timer = gevent.spawn_later(0 if digit == "#" else self._gap_s, self._flush)

    def _flush(self) -> None:
        with self._lock:
            digits, self._digits = "".join(self._digits), []
            self._timer = None
        if digits:
            self._entered(digits)

    def close(self) -> None:
        with self._lock:
            timer, self._timer = self._timer, None
        if timer is not None and timer is not gevent.getcurrent():
            timer.kill(block=False)
