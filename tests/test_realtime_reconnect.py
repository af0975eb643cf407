"""A Realtime session lost mid-call is opened again; the caller hears a short break, not the end.

The fake Realtime API drops the TCP connection, or goes silent without closing, part-way
through a response; the server reconnects, sends the same session, replays what was said, and
the call goes on. A second loss hands the call to a person, or ends it with an apology.
"""
import dataclasses
import xml.etree.ElementTree as ET

from prompts.tools import call_event
from tests.fakes.realtime_server import RealtimeScript, Reply
from tests.harness import TEST_TIMING

GREETING = Reply("שלום, הגעתם למספרת הבדיקה", 1000)
ANSWER = Reply("אנחנו פתוחים מתשע בבוקר עד שש בערב, בכל ימות השבוע", 3000)
ASKED = "מה השעות שלכם?"
HUMAN = "+97235550000"
# Deadlines shortened so that a silent socket shows within a second.
QUICK = dataclasses.replace(TEST_TIMING, realtime_ping_after_s=0.3, realtime_pong_timeout_s=0.3,
                            response_stall_s=1.0)


def _item_texts(conn) -> list[tuple[str, str]]:
    return [(item["role"], item["content"][0]["text"]) for item in conn.items_created if item.get("type") == "message"]


def _greet_then_ask(h):
    caller = h.call()
    caller.wait_heard(GREETING.audio_ms, timeout=5)
    caller.wait_quiet(150)
    caller.speak(600)
    return caller


def test_a_drop_mid_response_is_survived_and_the_new_session_knows_the_conversation(make_harness):
    h = make_harness(RealtimeScript(responses=[GREETING, ANSWER], faults={1: "drop"}, caller_transcripts=[ASKED]),
                     timing=QUICK)
    caller = _greet_then_ask(h)
    second = h.fake.wait_for_connection(2, timeout=5)
    first = h.fake.connections[0]
    second.wait_for_client_event("response.create", timeout=5)
    # The same session as before, then the conversation so far, then one apology.
    assert second.client_events("session.update")[0]["session"] == first.client_events("session.update")[0]["session"]
    said = _item_texts(second)
    assert said[:2] == [("assistant", GREETING.text), ("user", ASKED)]
    assert said[-1] == ("system", call_event("Reconnected"))
    assert len(second.client_events("response.create")) == 1
    heard_before = caller.heard_ms
    caller.wait_heard(heard_before + 500, timeout=5)  # the apology (the fake's default reply)
    caller.wait_quiet(150)
    caller.speak(600)  # and the caller's next turn is answered on the new session
    second.wait_for_client_event("response.create", count=2, timeout=5)
    caller.wait_heard(caller.heard_ms + 500, timeout=5)
    caller.stop()
    stored = h.wait_ended(caller.call_sid)
    assert stored.row.end_reason == "caller_hangup"
    assert stored.row.metrics["realtime_reconnects"] == 1
    assert 0 < stored.row.metrics["reconnect_gap_ms"][0] < 1500
    # Both of the caller's turns are stored (the fake's transcripts start again on each connection).
    assert [text for speaker, text, _ in stored.turns if speaker == "caller"] == [ASKED, ASKED]
    assert h.fake.invalid_events == []


def test_a_socket_that_goes_silent_without_closing_is_reconnected_after_its_deadline(make_harness):
    h = make_harness(RealtimeScript(responses=[GREETING, ANSWER], faults={1: "freeze"}, caller_transcripts=[ASKED]),
                     timing=QUICK)
    caller = _greet_then_ask(h)
    frozen = h.fake.connections[0]
    second = h.fake.wait_for_connection(2, timeout=5)
    assert frozen.frozen_at is not None
    # No frame for ping_after, then no pong for pong_timeout: about 0.6 s, well under 2 s.
    assert second.opened_at - frozen.frozen_at < 2.0
    second.wait_for_client_event("response.create", timeout=5)  # the apology, after the replay
    assert _item_texts(second)[:2] == [("assistant", GREETING.text), ("user", ASKED)]
    caller.wait_heard(caller.heard_ms + 500, timeout=5)
    caller.stop()
    assert h.wait_ended(caller.call_sid).row.metrics["realtime_reconnects"] == 1


def test_a_second_loss_hands_the_call_to_the_businesss_person(make_harness):
    h = make_harness(RealtimeScript(responses=[GREETING, ANSWER], faults={1: "drop", 2: "drop"},
                                    caller_transcripts=[ASKED]),
                     timing=QUICK, business={"transfer_number": HUMAN})
    caller = _greet_then_ask(h)
    second = h.fake.wait_for_connection(2, timeout=5)
    second.wait_for_client_event("response.create", timeout=5)  # the apology (response 0 of connection 2)
    caller.wait_heard(caller.heard_ms + 500, timeout=5)
    caller.wait_quiet(150)
    caller.speak(600)  # response 1 of connection 2 drops too
    caller.wait_closed(timeout=5)
    stored = h.wait_ended(caller.call_sid)
    assert stored.row.end_reason == "realtime_dropped" and stored.row.transfer_to == HUMAN
    after = h.stream_ended(caller.call_sid)
    root = ET.fromstring(after.twiml)
    assert root.find("Say") is not None and root.find("Dial").find("Number").text == HUMAN
    assert len(h.fake.connections) == 2


def test_a_second_loss_without_a_person_ends_with_an_apology(make_harness):
    h = make_harness(RealtimeScript(responses=[GREETING, ANSWER], faults={1: "drop", 2: "drop"},
                                    caller_transcripts=[ASKED]), timing=QUICK)
    caller = _greet_then_ask(h)
    h.fake.wait_for_connection(2, timeout=5).wait_for_client_event("response.create", timeout=5)
    caller.wait_heard(caller.heard_ms + 500, timeout=5)
    caller.wait_quiet(150)
    caller.speak(600)
    caller.wait_closed(timeout=5)
    assert h.wait_ended(caller.call_sid).row.end_reason == "realtime_dropped"
    after = h.stream_ended(caller.call_sid)
    assert after.hangup and any(say.strip() for say in after.says)


def test_a_response_that_stalls_is_cancelled_and_the_call_goes_on(make_harness):
    h = make_harness(RealtimeScript(responses=[GREETING, ANSWER], faults={1: "stall"}, caller_transcripts=[ASKED]),
                     timing=QUICK)
    caller = _greet_then_ask(h)
    conn = h.fake.connections[0]
    conn.wait_for_client_event("response.cancel", timeout=5)
    stalled = conn.responses[1]
    assert stalled.status == "cancelled" and stalled.audio_ms_sent == 0
    assert conn.client_event_records("response.cancel")[0].t - stalled.created_at >= QUICK.response_stall_s - 0.1
    caller.wait_quiet(150)
    caller.speak(600)  # the gate is free again: the next turn is answered
    conn.wait_for_client_event("response.create", count=3, timeout=5)
    caller.wait_heard(GREETING.audio_ms + 500, timeout=5)
    caller.stop()
    stored = h.wait_ended(caller.call_sid)
    assert stored.row.metrics["response_stalls"] == 1 and stored.row.metrics["realtime_reconnects"] == 0
    assert len(h.fake.connections) == 1
