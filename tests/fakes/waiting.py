"""Polling waits for tests that run under gevent: the benchmark's, shared."""
from bench.waiting import wait_for  # noqa: F401
