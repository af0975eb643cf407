"""Ending, transferring, silence, the time limit and the keypad, as the caller hears them."""
import dataclasses
import json
import xml.etree.ElementTree as ET

import pytest
import requests

from services.call_ending import is_farewell
from tests.fakes.realtime_server import RealtimeScript, Reply, ToolCall
from tests.fakes.waiting import wait_for
from tests.harness import TEST_TIMING

GREETING = Reply("שלום, הגעתם למספרת הבדיקה, איך אפשר לעזור?", 500)
GOODBYE = Reply("תודה שהתקשרתם, יום נעים ולהתראות!", 700)
HUMAN = "+972521112233"
FAST = dataclasses.replace(TEST_TIMING, goodbye_timeout_s=5.0)


def _greet_then_say(h, speech_ms=400):
    caller = h.call()
    caller.wait_heard(GREETING.audio_ms, timeout=5)
    caller.wait_quiet(150)
    caller.speak(speech_ms)
    return caller


def _goodbye_heard_in_full(caller, reply: Reply) -> None:
    segment = max(caller.segments, key=lambda s: s.index)
    assert segment.received_ms == reply.audio_ms
    assert segment.heard_ms == reply.audio_ms, "the line closed before the goodbye was heard"
    assert caller.unplayed_at_close_ms == 0


def test_end_call_closes_only_after_the_goodbye_is_heard_and_then_hangs_up(make_harness):
    h = make_harness(RealtimeScript(responses=[GREETING, ToolCall("end_call", {"reason": "caller is done"}), GOODBYE],
                                    caller_transcripts=["זהו, תודה רבה"]), timing=FAST)
    caller = _greet_then_say(h)
    caller.wait_closed(timeout=8)
    assert caller.closed_by_server and caller.close_code == 1000
    _goodbye_heard_in_full(caller, GOODBYE)
    closed_after_mark = caller.closed_at - caller.marks_echoed[-1][0]
    # Closed by the goodbye's mark, not by the 5 s deadline (a wide margin below it for a slow machine).
    assert 0 <= closed_after_mark < 2.0

    conn = h.fake.connections[0]
    outputs = [i for i in conn.items_created if i["type"] == "function_call_output"]
    assert [o["call_id"] for o in outputs] == [h.fake.responses[1].call_id]
    assert json.loads(outputs[0]["output"])["ok"] is True
    assert len(conn.client_events("response.create")) == 3
    assert h.fake.invalid_events == [] and h.fake.double_responses == []

    stored = h.wait_ended(caller.call_sid)
    assert stored.row.end_reason == "agent_hangup"
    assert stored.turns[-1] == ("agent", GOODBYE.text, False)
    after = h.stream_ended(caller.call_sid)
    assert after.hangup and after.says == ()


def test_the_session_declares_tools_from_the_business_settings(make_harness):
    h = make_harness(business={"transfer_number": HUMAN,
                               "working_hours": {"sun": [["09:00", "17:00"]]}})
    caller = h.call()
    caller.wait_heard(300, timeout=5)
    session = h.fake.connections[0].client_events("session.update")[0]["session"]
    tools = {tool["name"]: tool for tool in session["tools"]}
    assert set(tools) == {"end_call", "transfer_call", "check_availability", "schedule_appointment"}
    assert tools["schedule_appointment"]["parameters"]["required"] == ["name", "date", "time"]
    assert all(tool["description"] for tool in tools.values())
    assert h.fake.invalid_events == []


def test_without_a_transfer_number_or_working_hours_the_agent_can_only_end_the_call(make_harness):
    plain = make_harness()
    plain_caller = plain.call()
    plain_caller.wait_heard(300, timeout=5)
    plain_tools = plain.fake.connections[0].client_events("session.update")[0]["session"]["tools"]
    assert [tool["name"] for tool in plain_tools] == ["end_call"], "no transfer number, no working hours"


def test_the_agent_may_say_goodbye_and_end_the_call_in_one_response(make_harness):
    spoken = Reply(GOODBYE.text, GOODBYE.audio_ms, then_call=ToolCall("end_call", {"reason": "done"}))
    h = make_harness(RealtimeScript(responses=[GREETING, spoken]), timing=FAST)
    caller = _greet_then_say(h)
    caller.wait_closed(timeout=8)
    _goodbye_heard_in_full(caller, GOODBYE)
    assert h.wait_ended(caller.call_sid).row.end_reason == "agent_hangup"
    assert len(h.fake.connections[0].client_events("response.create")) == 2, "no second goodbye"


def test_a_caller_who_says_goodbye_hears_the_answer_and_the_call_ends(make_harness):
    h = make_harness(RealtimeScript(responses=[GREETING, GOODBYE], caller_transcripts=["תודה, ביי"]), timing=FAST)
    caller = _greet_then_say(h)
    caller.wait_closed(timeout=8)
    _goodbye_heard_in_full(caller, GOODBYE)
    assert h.wait_ended(caller.call_sid).row.end_reason == "caller_goodbye"
    assert h.stream_ended(caller.call_sid).hangup


def test_transfer_call_says_so_then_dials_the_human_with_caller_id_and_a_timeout(make_harness):
    transferring = Reply("אני מעבירה אותך לנציג, רק רגע.", 600)
    h = make_harness(RealtimeScript(responses=[GREETING, ToolCall("transfer_call", {"reason": "wants a person"}),
                                               transferring], caller_transcripts=["אפשר לדבר עם בן אדם?"]),
                     timing=FAST, business={"transfer_number": HUMAN, "transfer_mode": "cold"})
    caller = _greet_then_say(h)
    caller.wait_closed(timeout=8)
    _goodbye_heard_in_full(caller, transferring)
    stored = h.wait_ended(caller.call_sid)
    assert stored.row.end_reason == "transfer" and stored.row.transfer_to == HUMAN

    after = h.stream_ended(caller.call_sid)
    dial = ET.fromstring(after.twiml).find("Dial")
    assert dial is not None and dial.find("Number").text == HUMAN
    assert dial.get("callerId") == stored.row.from_number and dial.get("timeout") == str(FAST.transfer_ring_s)
    assert dial.get("action").endswith("/webhook/transfer_ended")

    # Nobody picks up: the caller hears a Hebrew apology and the call ends.
    no_answer = requests.post(dial.get("action"), data={"CallSid": caller.call_sid, "DialCallStatus": "no-answer"},
                              timeout=5)
    root = ET.fromstring(no_answer.text)
    assert root.find("Say").get("language") == "he-IL" and root.find("Hangup") is not None
    shown = requests.get(f"{h.live.base_url}/api/calls/{caller.call_sid}", timeout=5).json()
    assert (shown["transfer_to"], shown["transfer_status"], shown["end_reason"]) == (HUMAN, "no-answer", "transfer")
    answered = requests.post(dial.get("action"), data={"CallSid": caller.call_sid, "DialCallStatus": "completed"},
                             timeout=5)
    assert ET.fromstring(answered.text).find("Say") is None


def test_a_transfer_without_a_number_is_a_tool_answer_not_a_hang_up(make_harness):
    h = make_harness(RealtimeScript(responses=[GREETING, ToolCall("transfer_call", {"reason": "x"}),
                                               Reply("אין כרגע נציג זמין, אפשר להשאיר הודעה.", 500)]))
    caller = _greet_then_say(h)
    caller.wait_heard(GREETING.audio_ms + 500, timeout=6)
    output = next(i for i in h.fake.connections[0].items_created if i["type"] == "function_call_output")
    assert json.loads(output["output"])["ok"] is False
    assert not caller.closed


def test_tool_errors_go_back_to_the_model_and_the_call_goes_on(make_harness):
    h = make_harness(RealtimeScript(responses=[GREETING, ToolCall("check_availability", "{not json"),
                                               Reply("סליחה, אפשר לחזור על היום?", 500)]),
                     business={"working_hours": {"sun": [["09:00", "17:00"]]}})
    caller = _greet_then_say(h)
    caller.wait_heard(GREETING.audio_ms + 500, timeout=6)
    output = next(i for i in h.fake.connections[0].items_created if i["type"] == "function_call_output")
    assert json.loads(output["output"])["error"] == "bad_arguments"
    assert not caller.closed and h.fake.invalid_events == []


def test_a_silent_caller_is_asked_then_the_call_ends_politely(make_harness):
    timing = dataclasses.replace(FAST, silence_s=0.8)
    still_there = Reply("הלו, אתם עדיין על הקו?", 400)
    h = make_harness(RealtimeScript(responses=[GREETING, still_there, GOODBYE]), timing=timing)
    caller = h.call()
    caller.wait_closed(timeout=10)
    _goodbye_heard_in_full(caller, GOODBYE)
    conn = h.fake.connections[0]
    notices = [i["content"][0]["text"] for i in conn.items_created if i.get("role") == "system"]
    assert len(notices) == 2 and "still on the line" in notices[0] and "goodbye" in notices[1]
    # Silence is counted from when the agent stopped speaking, not while it spoke.
    ask_at = conn.client_event_records("response.create")[1].t
    greeting_heard_at = caller.segments[0].last_heard_at
    assert ask_at - greeting_heard_at >= 0.7
    assert h.wait_ended(caller.call_sid).row.end_reason == "silence"


def _notices(conn) -> list[str]:
    return [i["content"][0]["text"] for i in conn.items_created if i.get("role") == "system"]


def test_speech_after_the_silence_check_starts_the_count_again(make_harness):
    # Asked whether they are still there, the caller answers: the next silence earns a new
    # question, not the goodbye the second silence in a row would bring.
    timing = dataclasses.replace(FAST, silence_s=0.8)
    still_there = Reply("הלו, אתם עדיין על הקו?", 400)
    answer = Reply("מצוין, במה אפשר לעזור?", 400)
    h = make_harness(RealtimeScript(responses=[GREETING, still_there, answer, still_there, GOODBYE]), timing=timing)
    caller = h.call()
    conn = h.fake.wait_for_connection()
    wait_for(lambda: len(_notices(conn)) == 1, 8, message="the first silence check")
    caller.wait_heard(GREETING.audio_ms + still_there.audio_ms, timeout=5)
    caller.wait_quiet(150)
    caller.speak(300)
    caller.wait_heard(GREETING.audio_ms + still_there.audio_ms + answer.audio_ms, timeout=6)
    wait_for(lambda: len(_notices(conn)) >= 2, 8, message="the next silence notice")
    assert "still on the line" in _notices(conn)[1], "the caller's answer did not start the count again"
    assert not caller.closed
    # Silent from then on: the second silence in a row ends the call.
    caller.wait_closed(timeout=10)
    notices = _notices(conn)
    assert len(notices) == 3 and "goodbye" in notices[2]
    assert h.wait_ended(caller.call_sid).row.end_reason == "silence"


def test_the_call_ends_politely_at_its_maximum_duration(make_harness):
    timing = dataclasses.replace(FAST, max_call_s=1.0)
    h = make_harness(RealtimeScript(responses=[GREETING, GOODBYE, Reply("לא אמור להישמע", 600)]), timing=timing)
    caller = _greet_then_say(h, 600)  # still speaking when the time is up
    caller.wait_closed(timeout=10)
    _goodbye_heard_in_full(caller, GOODBYE)
    conn = h.fake.connections[0]
    notices = [i["content"][0]["text"] for i in conn.items_created if i.get("role") == "system"]
    assert any("time limit" in n for n in notices)
    assert len(conn.client_events("response.create")) == 2, "the caller's last words get no answer: the call is closing"
    assert h.wait_ended(caller.call_sid).row.end_reason == "max_duration"


def test_keypad_digits_reach_the_model_as_one_text_item_and_are_stored(make_harness):
    h = make_harness(RealtimeScript(responses=[GREETING, Reply("קיבלתי, שלוחה אחת אחת.", 500)]))
    caller = h.call()
    caller.wait_heard(GREETING.audio_ms, timeout=5)
    caller.dtmf("1")
    caller.dtmf("1")
    caller.wait_heard(GREETING.audio_ms + 500, timeout=5)
    conn = h.fake.connections[0]
    typed = [i for i in conn.items_created if i.get("role") == "user"]
    assert len(typed) == 1 and typed[0]["content"][0]["type"] == "input_text"
    assert typed[0]["content"][0]["text"].endswith("11")
    assert len(conn.client_events("response.create")) == 2
    caller.wait_quiet(150)
    caller.stop()
    assert ("dtmf", "11", False) in h.wait_ended(caller.call_sid).turns




@pytest.mark.parametrize("said, leaving", [
    ("תודה, ביי", True), ("תודה ולהתראות", True), ("ביי ביי", True), ("אוקיי, לילה טוב", True), ("ok bye then", True),
    ("שלום", False), ("יום טוב, רציתי לשאול על תור", False), ("להתראות?", False),
    ("רגע, לפני שאני אומר ביי יש לי עוד שאלה אחת", False),
])
def test_what_counts_as_the_caller_saying_goodbye(said, leaving):
    assert is_farewell(said) is leaving
