"""The Realtime host's addresses: looked up once, refreshed behind the calls, never waited for
behind other lookups."""
from __future__ import annotations

import logging
import socket
import gevent
from gevent import monkey

from services.realtime_addresses import AddressCache
from services.realtime_client import RealtimeConnection
from tests.fakes.realtime_server import FakeRealtime
from tests.manual_clock import ManualClock

A = (socket.AF_INET, ("203.0.113.1", 443))
B = (socket.AF_INET, ("203.0.113.2", 443))


class Lookups:
    """Answers lookups from a list, counting them; raises when told to fail."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.count = 0
        self.fail = False

    def __call__(self, host, port, type=0):
        self.count += 1
        if self.fail:
            raise socket.gaierror("lookup failed")
        family, sockaddr = self.answers.pop(0)
        return [(family, type, 6, "", sockaddr)]


def test_a_numeric_host_is_never_looked_up():
    lookups = Lookups()
    cache = AddressCache(lookup=lookups)
    assert cache.address("127.0.0.1", 8080) == (socket.AF_INET, ("127.0.0.1", 8080))
    assert cache.address("::1", 443) == (socket.AF_INET6, ("::1", 443, 0, 0))
    assert lookups.count == 0


def test_a_name_is_looked_up_once_then_refreshed_in_the_background():
    clock = ManualClock()
    lookups = Lookups(A, B)
    cache = AddressCache(lookup=lookups, clock=clock, refresh_after_s=300)
    assert cache.address("api.example.com", 443) == A
    clock.advance_ms(299_000)
    assert cache.address("api.example.com", 443) == A
    assert lookups.count == 1
    clock.advance_ms(1_000)
    assert cache.address("api.example.com", 443) == A  # the old one, at once; the new one is looked up
    gevent.sleep(0)
    assert lookups.count == 2
    assert cache.address("api.example.com", 443) == B


def test_a_failed_refresh_keeps_the_old_address_and_says_so(caplog):
    clock = ManualClock()
    lookups = Lookups(A)
    cache = AddressCache(lookup=lookups, clock=clock, refresh_after_s=10)
    cache.address("api.example.com", 443)
    lookups.fail = True
    clock.advance_ms(10_000)
    with caplog.at_level(logging.WARNING, logger="realtime"):
        assert cache.address("api.example.com", 443) == A
        gevent.sleep(0)
    assert [r.getMessage() for r in caplog.records] == ["Realtime host lookup failed: the last address stays in use"]
    assert cache.address("api.example.com", 443) == A
    assert lookups.count == 2  # the next try waits another period, not every connect


def test_a_forgotten_address_is_looked_up_again():
    lookups = Lookups(A, B)
    cache = AddressCache(lookup=lookups)
    assert cache.address("api.example.com", 443) == A
    cache.forget("api.example.com", 443)
    assert cache.address("api.example.com", 443) == B


def test_a_connect_does_not_wait_behind_other_lookups_in_the_resolver_pool():
    """Every thread of gevent's resolver pool is held by a lookup that hangs (as api.twilio.com's
    did where it had no route); a connect to a host already looked up goes through meanwhile."""
    with FakeRealtime() as fake:
        url = fake.url.replace("127.0.0.1", "localhost")
        first = RealtimeConnection(url, "sk-test", 5.0)
        first.connect()  # the process's first connect to `localhost` looks it up
        first.close()
        pool = gevent.get_hub().threadpool
        release = monkey.get_original("_thread", "allocate_lock")()  # a real lock: the threads block on it
        release.acquire()
        hanging = [pool.spawn(_hang_until_released, release) for _ in range(pool.maxsize)]
        blocked_sleep = monkey.get_original("time", "sleep")
        try:
            blocked_sleep(0.05)  # the pool's threads are all inside their waits
            assert not any(h.ready() for h in hanging)
            second = RealtimeConnection(url, "sk-test", 5.0)
            second.connect()
            assert not any(h.ready() for h in hanging), "the connect ran after the pool's lookups"
            second.close()
        finally:
            release.release()
            for h in hanging:
                h.get(timeout=5)


def _hang_until_released(release) -> None:
    if release.acquire(timeout=10):
        release.release()  # the next hanging thread's turn
