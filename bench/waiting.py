"""Polling waits under gevent, for the benchmark and the tests."""
from __future__ import annotations

import time
from typing import Callable, TypeVar

import gevent

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float = 5.0, interval: float = 0.01,
             message: str | Callable[[], str] = "condition") -> T:
    """Return the predicate's first truthy value; AssertionError after `timeout` seconds.

    Polls with gevent.sleep so the fakes' greenlets keep running meanwhile.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {text}")
        gevent.sleep(interval)
