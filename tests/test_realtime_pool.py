"""Realtime connections opened ahead of calls: a call takes one already open, waiting ones are
replaced before they grow stale, and the pool empties when calls stop coming."""
from __future__ import annotations

import json

import pytest

from services import realtime_protocol as rt

from services.realtime_pool import RealtimePool
from tests.fakes.realtime_server import FakeRealtime, RealtimeScript, Reply
from tests.fakes.waiting import wait_for
from tests.manual_clock import ManualClock

GREETING = Reply("שלום, הגעתם למספרה", 400)


@pytest.fixture
def fake():
    with FakeRealtime() as server:
        yield server


def _pool(fake: FakeRealtime, clock: ManualClock, size: int = 2) -> RealtimePool:
    return RealtimePool(fake.url, "sk-test", size=size, idle_s=20.0, warm_s=300.0, connect_timeout_s=5.0, clock=clock)


def _warm(pool: RealtimePool, size: int) -> None:
    """Start the pool as a first call does (finding nothing), and wait until it is full."""
    pool.take(pool.url)
    wait_for(lambda: pool.waiting == size, 5, message="the pool to fill")


def _open(fake: FakeRealtime) -> list:
    return [c for c in fake.connections if not c.closed]


def test_a_cold_pool_gives_nothing_and_fills_for_the_next_call(fake):
    pool = _pool(fake, ManualClock())
    try:
        assert pool.take(fake.url) is None
        wait_for(lambda: pool.waiting == 2 and len(_open(fake)) == 2, 5, message="the pool to fill")
        opened = list(fake.connections)
        taken = pool.take(fake.url)
        assert taken is not None and pool.taken == 1
        taken.connect()  # open already: no new connection for it
        taken.send(json.dumps({"type": "session.update", "session": {"type": "realtime"}}))
        served = wait_for(lambda: next((c for c in opened if c.client_events("session.update")), None), 5,
                          message="the session.update to arrive on a waiting connection")
        served.wait_for_server_event("session.updated")
        wait_for(lambda: pool.waiting == 2, 5, message="the pool to refill")
        assert len(fake.connections) == 3 and fake.carried() == [served]
        taken.close()
    finally:
        pool.close()
    wait_for(lambda: _open(fake) == [], 5, message="the waiting connections to close")


def test_a_waiting_connection_is_replaced_before_it_grows_stale(fake):
    clock = ManualClock()
    pool = _pool(fake, clock)
    try:
        _warm(pool, 2)
        first = list(fake.connections)
        clock.advance_ms(20_000)
        wait_for(lambda: all(c.closed for c in first) and len(_open(fake)) == 2 and pool.waiting == 2, 5,
                 message="the stale connections to be replaced")
        taken = pool.take(fake.url)
        taken.send(json.dumps({"type": "session.update", "session": {"type": "realtime"}}))
        served = wait_for(lambda: next((c for c in fake.connections if c.client_events()), None), 5,
                          message="the session.update to arrive")
        assert served not in first
        taken.close()
    finally:
        pool.close()


def test_the_pool_empties_when_calls_stop_coming(fake):
    clock = ManualClock()
    pool = RealtimePool(fake.url, "sk-test", size=2, idle_s=20.0, warm_s=30.0, connect_timeout_s=5.0, clock=clock)
    _warm(pool, 2)
    clock.advance_ms(15_000)
    taken = pool.take(fake.url)  # a call within the warm period keeps it warm
    assert taken is not None
    taken.close()
    clock.advance_ms(30_000)
    wait_for(lambda: pool.waiting == 0 and _open(fake) == [], 5, message="the pool to empty")
    opened = len(fake.connections)
    clock.advance_ms(60_000)
    assert len(fake.connections) == opened, "an idle server opens nothing"
    pool.close()


def test_calls_that_find_none_grow_the_pool_up_to_its_most_and_unused_ones_shrink_it_back(fake):
    clock = ManualClock()
    pool = RealtimePool(fake.url, "sk-test", size=1, max_size=3, idle_s=20.0, warm_s=300.0, connect_timeout_s=5.0,
                        clock=clock)
    try:
        _warm(pool, 1)
        assert pool.target == 1, "the cold pool's first call does not count: it only starts the pool"
        # Calls faster than it refills (no turn of the loop between them): the second finds none.
        taken = [pool.take(fake.url), pool.take(fake.url)]
        assert taken[0] is not None and taken[1] is None and pool.target == 2
        wait_for(lambda: pool.waiting == 2, 5, message="the pool to fill to its new size")
        taken += [pool.take(fake.url) for _ in range(4)]
        assert [t is not None for t in taken[2:]] == [True, True, False, False] and pool.target == 3, "no more than its most"
        wait_for(lambda: pool.waiting == 3, 5, message="the pool to fill to its most")
        opened = len(fake.connections)
        clock.advance_ms(20_000)  # all three waited their idle time out, unused
        wait_for(lambda: pool.target == 1 and pool.waiting == 1, 5, message="the pool to shrink back")
        assert len(fake.connections) == opened + 1, "only the one it keeps is replaced"
        for connection in taken:
            if connection is not None:
                connection.close()
    finally:
        pool.close()
    wait_for(lambda: _open(fake) == [], 5, message="the waiting connections to close")


def test_a_call_taking_a_connection_starts_its_replacement_while_others_are_opening(fake):
    """Every connect on its own greenlet: a connection taken is replaced at once, not after the
    handshakes already under way."""
    pool = _pool(fake, ManualClock(), size=2)
    try:
        _warm(pool, 2)
        fake.script.handshake_delay_ms = 2000
        first = pool.take(fake.url)
        wait_for(lambda: fake.upgrades == 3, 5, message="the first replacement to start")
        second = pool.take(fake.url)
        # Within the first one's handshake: not after it.
        wait_for(lambda: fake.upgrades == 4 and pool.waiting == 0, 1.5,
                 message="the second replacement to start at once")
        wait_for(lambda: pool.waiting == 2, 10, message="both replacements to wait")
        first.close()
        second.close()
    finally:
        pool.close()


def test_what_the_service_said_to_a_waiting_connection_is_kept_for_the_call(fake):
    pool = _pool(fake, ManualClock(), size=1)
    try:
        _warm(pool, 1)
        waiting = fake.connections[0]
        waiting.wait_for_server_event("session.created")
        taken = pool.take(fake.url)  # reads the connection: the service's events so far are kept
        waiting.send({"type": "session.updated", "session": waiting.session})
        assert taken.receive() == rt.Ignored(type="session.created")
        assert taken.receive() == rt.SessionUpdated()
        taken.close()
    finally:
        pool.close()


def test_a_connection_the_network_dropped_is_not_handed_out(fake):
    pool = _pool(fake, ManualClock(), size=1)
    try:
        _warm(pool, 1)
        fake.connections[0].drop()
        wait_for(lambda: fake.connections[0].closed, 5, message="the connection to drop")
        assert pool.take(fake.url) is None
    finally:
        pool.close()


def test_a_connection_for_another_address_is_not_handed_out(fake):
    pool = _pool(fake, ManualClock(), size=1)
    try:
        _warm(pool, 1)
        assert pool.take(fake.url + "?model=another") is None
    finally:
        pool.close()


def test_a_call_greets_on_a_connection_opened_before_its_stream(make_harness):
    h = make_harness(RealtimeScript(responses=[GREETING, GREETING]), realtime_pool_size=1)
    first = h.call()
    first.wait_heard(GREETING.audio_ms, timeout=5)
    pool = h.live.app.extensions["realtime_pool"]
    wait_for(lambda: pool.waiting == 1 and len(h.fake.connections) == 2, 5,
             message="the pool to fill behind the first call")
    [waiting] = [c for c in h.fake.connections if not c.client_events()]
    second = h.call()
    second.wait_heard(GREETING.audio_ms, timeout=5)
    assert pool.taken == 1
    assert waiting.client_events("session.update"), "the second call ran on the connection that waited"
    assert len(h.fake.carried()) == 2
    for caller in (first, second):
        caller.stop()
        h.wait_ended(caller.call_sid)


def test_the_pool_is_configured_from_the_environment():
    from services.settings import Settings, SettingsError

    assert Settings.from_env({}).realtime_pool_size == 2
    assert Settings.from_env({}).realtime_pool_max == 16
    assert Settings.from_env({"REALTIME_POOL_MAX": "4"}).realtime_pool_max == 4
    assert Settings.from_env({"REALTIME_POOL_SIZE": "0", "REALTIME_POOL_IDLE_S": "5"}).realtime_pool_idle_s == 5
    for bad in ({"REALTIME_POOL_SIZE": "many"}, {"REALTIME_POOL_SIZE": "-1"}, {"REALTIME_POOL_IDLE_S": "0"},
                {"REALTIME_POOL_MAX": "-1"}):
        with pytest.raises(SettingsError):
            Settings.from_env(bad)
