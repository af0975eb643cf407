"""When something on the Realtime side fails, the caller never gets dead air and the row says why."""
import dataclasses
import json
import socket
import time

import gevent
import websocket

from tests.db_lock import database_lock_ready
from tests.fakes.realtime_server import RealtimeScript, Reply
from tests.harness import TEST_TIMING
from tests.fakes.waiting import wait_for

GREETING = Reply("שלום, הגעתם למספרת הבדיקה", 1000)


def _apologises(placed) -> bool:
    return placed.hangup and any(say.strip() for say in placed.says)


def test_a_late_session_updated_gets_the_update_sent_again_and_the_call_goes_on(make_harness):
    h = make_harness(RealtimeScript(responses=[GREETING], session_updated="second"))
    caller = h.call()
    caller.wait_heard(1000, timeout=5)
    conn = h.fake.connections[0]
    records = conn.client_event_records("session.update")
    assert len(records) == 2
    assert 0.5 <= records[1].t - records[0].t <= 0.9  # re-sent once, at the retry time (0.6 s in tests)
    assert records[0].data == records[1].data
    assert h.fake.invalid_events == []


def test_a_refused_session_update_withdraws_the_greeting_behind_it_unheard(make_harness):
    # The API refuses the first update (and keeps its defaults), then creates the response asked
    # for behind it, under those defaults: that one is cancelled, and none of it is played or
    # stored. The update sent again is applied, and the greeting is asked for under it.
    wrong = Reply("Hello! How can I help you today?", 1500)
    h = make_harness(RealtimeScript(responses=[wrong, GREETING], session_updated="refuse_first"))
    caller = h.call()
    caller.wait_heard(1000, timeout=5)
    conn = h.fake.connections[0]
    kinds = [e.type for e in conn.client_event_records() if e.type != "input_audio_buffer.append"]
    assert kinds[:4] == ["session.update", "response.create", "response.cancel", "session.update"], kinds
    assert kinds.count("response.create") == 2
    creates = conn.client_events("response.create")
    assert creates[0]["response"]["instructions"] == creates[1]["response"]["instructions"]
    caller.wait_quiet(300)
    caller.stop()
    stored = h.wait_ended(caller.call_sid)
    assert [text for speaker, text, _ in stored.turns if speaker == "agent"] == [GREETING.text]
    assert caller.heard_ms < 1500, "none of the withdrawn response was played"


def test_no_session_updated_ends_the_call_cleanly_with_an_apology(make_harness):
    h = make_harness(RealtimeScript(session_updated="never"))
    caller = h.call()
    other = h.call()  # a parallel call on the same server suffers the same fake, not the same fate
    caller.wait_closed(timeout=4)
    stored = h.wait_ended(caller.call_sid)
    assert stored.row.end_reason == "realtime_session_timeout"
    assert len(h.fake.connections[0].client_events("session.update")) == 2
    # The greeting went right behind the update; nothing more is asked of an unconfirmed session.
    assert len(h.fake.connections[0].client_events("response.create")) == 1
    assert _apologises(h.stream_ended(caller.call_sid))
    other.wait_closed(timeout=4)
    assert h.stored(other.call_sid).row.end_reason == "realtime_session_timeout"


def test_an_end_begun_off_rx_stores_the_call_before_the_stream_closes(make_harness):
    # The session's deadline ends the call from a timer greenlet while the database is held, so its
    # row cannot be written yet. RX, woken by the caller's frames meanwhile, must not return: that
    # closes the stream, and Twilio asks /webhook/stream_ended what next, which reads the row.
    h = make_harness(RealtimeScript(session_updated="never"))
    # Connected before the call: the lock is then taken within the session's 1.5 s deadline, however
    # long a new process takes to start on this machine.
    with database_lock_ready(h.live.settings.database_url) as lock:
        caller = h.call()
        wait_for(lambda: h.fake.connections and h.fake.connections[0].client_events("session.update"), 5,
                 message="the session.update")
        conn = h.fake.connections[0]
        lock.take()
        assert not conn.closed, "the call ended before the database was locked"
        wait_for(lambda: conn.closed, 5, message="the call's end to close its Realtime socket")
        gevent.sleep(0.5)  # 25 caller frames: RX has seen the end
        assert not caller.closed, "the stream closed before the call's end was stored"
        releasing_at = time.monotonic()  # the lock goes as the block ends
    assert not lock.held
    caller.wait_closed(timeout=10)
    assert caller.closed_at > releasing_at
    assert h.stored(caller.call_sid).row.end_reason == "realtime_session_timeout"
    assert _apologises(h.stream_ended(caller.call_sid))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_realtime_api_ends_the_call_with_an_apology(make_harness):
    h = make_harness(realtime_url=f"ws://127.0.0.1:{_closed_port()}/v1/realtime")
    caller = h.call()
    caller.wait_closed(timeout=4)
    assert caller.heard_ms == 0
    assert h.wait_ended(caller.call_sid).row.end_reason == "realtime_unavailable"
    assert _apologises(h.stream_ended(caller.call_sid))


def test_a_realtime_api_refusing_the_connection_ends_the_call_with_an_apology(make_harness):
    h = make_harness(RealtimeScript(refuse_upgrade=True))
    caller = h.call()
    caller.wait_closed(timeout=4)
    assert h.fake.refused and h.fake.refused[0].get("Authorization") == "Bearer sk-test"
    assert h.wait_ended(caller.call_sid).row.end_reason == "realtime_unavailable"
    assert _apologises(h.stream_ended(caller.call_sid))


def test_the_realtime_socket_dropping_again_after_a_reconnect_ends_the_call_and_keeps_what_was_said(make_harness):
    # Every connection drops 2 s after its session is confirmed: the first loss is reconnected,
    # the second ends the call (tests/test_realtime_reconnect.py has the conversation across one).
    h = make_harness(RealtimeScript(responses=[GREETING], drop_after_session_updated_s=2.0))
    caller = h.call()
    caller.wait_heard(1000, timeout=5)
    caller.wait_closed(timeout=8)
    stored = h.wait_ended(caller.call_sid)
    assert len(h.fake.connections) == 2
    assert stored.row.end_reason == "realtime_dropped" and stored.row.metrics["realtime_reconnects"] == 1
    assert stored.turns == [("agent", GREETING.text, False)]
    assert stored.row.metrics["greeting_latency_ms"] is not None
    assert _apologises(h.stream_ended(caller.call_sid))


def test_a_caller_hanging_up_is_a_plain_hangup(make_harness):
    h = make_harness(RealtimeScript(responses=[GREETING]))
    caller = h.call()
    caller.wait_heard(300, timeout=5)
    caller.stop()
    assert h.wait_ended(caller.call_sid).row.end_reason == "caller_hangup"
    placed = h.stream_ended(caller.call_sid)
    assert placed.hangup and placed.says == ()
    assert h.fake.wait_for(lambda: h.fake.connections[0].closed, timeout=3)


def test_a_caller_vanishing_without_stop_ends_the_call(make_harness):
    h = make_harness(RealtimeScript(responses=[GREETING]))
    caller = h.call()
    caller.wait_heard(300, timeout=5)
    caller.close_abruptly()
    stored = h.wait_ended(caller.call_sid)
    assert stored.row.end_reason == "stream_closed"
    assert h.fake.wait_for(lambda: h.fake.connections[0].closed, timeout=3)


def test_a_stream_that_goes_quiet_without_closing_is_ended(make_harness):
    h = make_harness(RealtimeScript(responses=[GREETING]), timing=dataclasses.replace(TEST_TIMING, twilio_idle_s=0.5))
    call_sid, placed = h.place()
    ws = websocket.create_connection(h.live.media_url, timeout=5)
    ws.send(json.dumps({"event": "connected"}))
    ws.send(json.dumps({"event": "start", "streamSid": "MZidle", "start": {
        "streamSid": "MZidle", "callSid": call_sid, "customParameters": placed.parameters}}))
    stored = h.wait_ended(call_sid, timeout=5)
    assert stored.row.end_reason == "twilio_idle"
    ws.close()
