"""Call paths that start on the caller's side of the line, through the real server.

The caller speaks before the greeting has begun, talks over an answer that has not reached
them yet or over the agent's goodbye, is on a line whose marks never come back, sends audio
while the session is still being set up, sends a second `start`, or sends its frames late and
in clumps. Each test says what the caller and the model get; none depends on the machine's speed
beyond wide, stated bounds.
"""
import base64
import dataclasses
import logging

import pytest

from services.playback import MARK_PREFIX
from services.settings import CallTiming
from tests.fakes.realtime_server import RealtimeScript, Reply, ToolCall
from tests.fakes.twilio_caller import ROUGH_LINE, Line, read_tag, withhold_all
from tests.fakes.waiting import wait_for
from tests.harness import TEST_TIMING

GREETING = Reply("שלום, הגעתם למספרת הבדיקה, איך אפשר לעזור?", 800)
ANSWER = Reply("כן, במה אפשר לעזור?", 600)
GOODBYE = Reply("תודה שהתקשרתם, יום נעים ולהתראות!", 700)
LONG_GOODBYE = Reply("תודה רבה שהתקשרתם אלינו היום, נשמח לשמוע מכם שוב, יום נעים ולהתראות!", 3000)
STILL_THERE = Reply("הלו, אתם עדיין על הקו?", 400)
# The greeting's audio comes this long after its response is created (the real API: 0.3-1 s);
# long enough that the caller's speech reaches the server first on a loaded machine.
LATE_AUDIO_MS = 2500


def _clean(h, caller) -> None:
    assert h.fake.invalid_events == [] and h.fake.double_responses == []
    assert caller.protocol_errors == [] and caller.greenlet_errors == []


def _greeting_creates(h) -> list:
    return [r for r in h.fake.responses if r.instructions]


def _greeting_heard_whole(caller, h) -> None:
    greeting = _greeting_creates(h)
    assert len(greeting) == 1, "the greeting is asked for once"
    segment = caller.segment_ending(MARK_PREFIX + greeting[0].item_id)
    assert segment is not None and segment.received_ms == segment.heard_ms == GREETING.audio_ms
    assert segment.cleared_ms == 0


def _appended_tags(conn) -> list[int]:
    tags = [read_tag(base64.b64decode(e["audio"])) for e in conn.client_events("input_audio_buffer.append")]
    assert None not in tags, "every frame the model got is one the caller sent"
    return [chunk for chunk, _ in tags]


# --- speech before the greeting's audio ----------------------------------------------


def test_a_noise_before_the_greetings_audio_leaves_the_greeting_whole(make_harness):
    h = make_harness(RealtimeScript(responses=[GREETING, ANSWER], first_byte_ms=LATE_AUDIO_MS))
    caller = h.call()
    # The greeting is asked for and its item is there (as the real API sends it, before the audio).
    h.fake.wait_for_connection().wait_for_server_event("response.output_item.added")
    caller.speak(100)  # a click, a breath
    caller.wait_heard(GREETING.audio_ms, timeout=LATE_AUDIO_MS / 1000 + 6)
    caller.wait_quiet(300)
    conn = h.fake.connections[0]
    [started_at] = [t for t, e in conn.server_events if e["type"] == "input_audio_buffer.speech_started"]
    assert conn.server_event_list("input_audio_buffer.speech_stopped"), "the VAD heard it, and its end"
    assert started_at < h.fake.responses[0].first_audio_at, "it came before any of the greeting's audio"
    _greeting_heard_whole(caller, h)
    assert conn.client_events("response.cancel") == [] and conn.client_events("conversation.item.truncate") == []
    assert caller.clears == []
    assert len(conn.client_events("response.create")) == 1, "no answer to the noise, no second greeting"
    caller.stop()
    stored = h.wait_ended(caller.call_sid)
    assert ("agent", GREETING.text, False) in stored.turns
    _clean(h, caller)


def test_a_hello_before_the_greetings_audio_does_not_cancel_the_greeting(make_harness):
    h = make_harness(RealtimeScript(responses=[GREETING, ANSWER, ANSWER], first_byte_ms=LATE_AUDIO_MS))
    caller = h.call()
    h.fake.wait_for_event("response.create")
    caller.speak(800)  # "הלו? הלו?" while the line is still quiet
    caller.wait_heard(GREETING.audio_ms, timeout=LATE_AUDIO_MS / 1000 + 6)
    conn = h.fake.connections[0]
    assert conn.client_events("response.cancel") == [], "the greeting is not cancelled before it was heard"
    _greeting_heard_whole(caller, h)
    _clean(h, caller)


# --- barge-in before any audio of an answer -----------------------------------------


def test_speech_over_an_answer_that_has_not_reached_the_caller_cancels_it_without_a_truncate(make_harness):
    h = make_harness(RealtimeScript(responses=[GREETING, Reply("לא אמור להישמע", 1000), ANSWER],
                                    first_byte_ms=LATE_AUDIO_MS, caller_transcripts=["מה השעות?", "רגע, עוד משהו"]))
    caller = h.call()
    caller.wait_heard(GREETING.audio_ms, timeout=LATE_AUDIO_MS / 1000 + 6)
    caller.wait_quiet(150)
    caller.speak(400)
    wait_for(lambda: len(h.fake.responses) == 2, 5, message="the answer to be asked for")
    caller.speak(800)  # the caller goes on while the answer is still silent
    cut = h.fake.responses[1]
    wait_for(lambda: cut.status != "in_progress", 5, message="the answer to end")
    caller.wait_heard(GREETING.audio_ms + ANSWER.audio_ms, timeout=LATE_AUDIO_MS / 1000 + 8)

    conn = h.fake.connections[0]
    assert cut.status == "cancelled" and cut.audio_ms_sent == 0
    assert [c.cancelled for c in conn.cancels] == [cut.id]
    assert conn.client_events("conversation.item.truncate") == [], "nothing was heard: nothing to truncate"
    assert caller.clears == [], "nothing was sent to Twilio: nothing to clear"
    assert [s.received_ms for s in caller.segments] == [GREETING.audio_ms, ANSWER.audio_ms]
    assert h.fake.responses[2].transcript == ANSWER.text
    caller.wait_quiet(150)
    caller.stop()
    stored = h.wait_ended(caller.call_sid)
    agent = [t for t in stored.turns if t[0] == "agent"]
    assert agent == [("agent", GREETING.text, False), ("agent", ANSWER.text, False)], "the unheard answer is not stored"
    _clean(h, caller)


# --- the goodbye when marks never come back -------------------------------------------


@pytest.mark.parametrize("script, end_reason", [
    (RealtimeScript(responses=[GREETING, GOODBYE], caller_transcripts=["תודה, ביי"]), "caller_goodbye"),
    (RealtimeScript(responses=[GREETING, ToolCall("end_call", {"reason": "done"}), GOODBYE],
                    caller_transcripts=["זהו, תודה"]), "agent_hangup"),
], ids=["caller_goodbye", "end_call"])
def test_without_marks_the_goodbye_deadline_still_closes_the_call(make_harness, caplog, script, end_reason):
    deadline_s = 3.0
    h = make_harness(script, timing=dataclasses.replace(TEST_TIMING, goodbye_timeout_s=deadline_s))
    caplog.set_level(logging.WARNING, logger="call")
    caller = h.call(line=Line(withhold_marks=withhold_all))
    caller.wait_heard(GREETING.audio_ms, timeout=6)
    caller.wait_quiet(150)
    caller.speak(400)
    wait_for(lambda: caller.heard_ms >= GREETING.audio_ms + GOODBYE.audio_ms, 8, message="the goodbye heard")
    assert not caller.closed, "no mark came back: the server cannot know it was heard"
    caller.wait_closed(timeout=deadline_s + 8)

    assert caller.closed_by_server and caller.close_code == 1000
    assert caller.marks_echoed == [] and len(caller.marks_withheld) >= 2
    # The deadline starts with the ending, which starts once the server has the goodbye (the
    # caller's words, or the agent's end_call): never before the fake sent it.
    conn = h.fake.connections[0]
    begun_after = (next(t for t, e in conn.server_events
                        if e["type"] == "conversation.item.input_audio_transcription.completed")
                   if end_reason == "caller_goodbye" else h.fake.responses[1].done_at)
    assert caller.closed_at - begun_after >= deadline_s - 0.01
    assert any("not heard in time" in r.getMessage() for r in caplog.records)
    stored = h.wait_ended(caller.call_sid)
    assert stored.row.end_reason == end_reason
    assert stored.turns[-1] == ("agent", GOODBYE.text, False)
    _clean(h, caller)


# --- the caller talks over the goodbye ---------------------------------------------------

# Cut at the first sound of speech: these tests time the cut against the goodbye's deadline and
# what the clear found playing (a held goodbye, the default, is tests/test_barge_in_hold.py's).
CUT_AT_ONCE = {"barge_in_mode": "immediate"}


def _wait_goodbye_playing(caller, index: int, ms: float = 600) -> None:
    wait_for(lambda: len(caller.segments) > index and caller.segments[index].heard_ms >= ms, 12,
             message=f"{ms} ms of the goodbye (segment {index}) heard")


def _silence_checks(conn) -> int:
    return sum("still on the line" in i["content"][0]["text"] for i in conn.items_created if i.get("role") == "system")


def test_talking_over_a_silence_goodbye_calls_it_off(make_harness, caplog):
    timing = dataclasses.replace(TEST_TIMING, silence_s=0.8, goodbye_timeout_s=1.0)
    h = make_harness(RealtimeScript(responses=[GREETING, STILL_THERE, LONG_GOODBYE, ANSWER]), timing=timing,
                     business=CUT_AT_ONCE)
    caplog.set_level(logging.INFO, logger="call")
    caller = h.call()
    _wait_goodbye_playing(caller, 2)
    caller.speak(800)
    clear = caller.wait_clear(timeout=5)
    caller.wait_heard(GREETING.audio_ms + STILL_THERE.audio_ms + clear.playing_heard_ms + ANSWER.audio_ms,
                      timeout=8)
    # The call is no longer ending: the silence count runs again (it stands still while a call
    # ends), and the agent asks again whether the caller is there, where the goodbye's 1 s
    # deadline would have closed the line.
    conn = h.fake.connections[0]
    wait_for(lambda: _silence_checks(conn) == 2 or caller.closed, 8, message="a second silence check")
    assert not caller.closed and _silence_checks(conn) == 2
    assert any("the call goes on" in r.getMessage() for r in caplog.records)
    assert [t["item_id"] for t in conn.client_events("conversation.item.truncate")] == [h.fake.responses[2].item_id]
    caller.stop()
    stored = h.wait_ended(caller.call_sid)
    assert stored.row.end_reason == "caller_hangup"
    cut = [t for t in stored.turns if t[2]]
    assert len(cut) == 1 and LONG_GOODBYE.text.startswith(cut[0][1]) and cut[0][1] != LONG_GOODBYE.text
    _clean(h, caller)


def test_talking_over_the_time_limits_goodbye_ends_the_call_at_once(make_harness):
    timing = dataclasses.replace(TEST_TIMING, max_call_s=2.0, goodbye_timeout_s=15.0)
    h = make_harness(RealtimeScript(responses=[GREETING, LONG_GOODBYE, ANSWER]), timing=timing, business=CUT_AT_ONCE)
    caller = h.call()
    caller.wait_heard(GREETING.audio_ms, timeout=6)
    _wait_goodbye_playing(caller, 1)
    caller.speak(800)
    clear = caller.wait_clear(timeout=5)
    caller.wait_closed(timeout=5)  # at once: not when the goodbye's 15 s deadline is over
    assert caller.closed_by_server
    goodbye = caller.segments[1]
    assert goodbye.heard_ms < LONG_GOODBYE.audio_ms and goodbye.heard_ms == pytest.approx(clear.playing_heard_ms, abs=1)
    conn = h.fake.connections[0]
    assert len(conn.client_events("response.create")) == 2, "the caller's words get no answer: the call is closing"
    assert [t["item_id"] for t in conn.client_events("conversation.item.truncate")] == [h.fake.responses[1].item_id]
    stored = h.wait_ended(caller.call_sid)
    assert stored.row.end_reason == "max_duration"
    _clean(h, caller)


# --- caller audio held while the session is set up -----------------------------------------

SLOW_SESSION = CallTiming(session_update_retry_s=6.0, session_update_timeout_s=8.0)


def test_audio_sent_during_set_up_reaches_the_model_in_order(make_harness):
    h = make_harness(RealtimeScript(session_updated_delay_ms=1000), timing=SLOW_SESSION)
    caller = h.call(tagged=True)
    conn = h.fake.wait_for_connection()
    conn.wait_for_server_event("session.updated", timeout=5)
    caller.wait_heard(300, timeout=6)
    sent = caller.frames_sent
    wait_for(lambda: len(conn.client_events("input_audio_buffer.append")) >= sent, 5, message="every frame forwarded")
    caller.stop()

    tags = _appended_tags(conn)
    assert tags[:sent] == list(range(1, sent + 1)), "every frame, the held ones first, in the caller's order"
    updated_at = conn.server_events[[e["type"] for _, e in conn.server_events].index("session.updated")][0]
    first_append = conn.client_event_records("input_audio_buffer.append")[0]
    assert first_append.t >= updated_at, "held until the session was confirmed"
    assert tags[0] == 1, "the first frame, sent a second before, was held, not lost"
    stored = h.wait_ended(caller.call_sid)
    assert "session_not_ready" not in stored.row.metrics["frames_dropped"]
    _clean(h, caller)


def test_the_held_audio_is_capped_and_the_oldest_goes(make_harness):
    h = make_harness(RealtimeScript(session_updated_delay_ms=5000), timing=SLOW_SESSION)
    caller = h.call(tagged=True)
    conn = h.fake.wait_for_connection()
    conn.wait_for_server_event("session.updated", timeout=8)
    wait_for(lambda: conn.client_events("input_audio_buffer.append"), 5, message="the held audio")
    caller.wait_heard(300, timeout=6)
    caller.stop()
    stored = h.wait_ended(caller.call_sid)

    tags = _appended_tags(conn)
    dropped = stored.row.metrics["frames_dropped"]["session_not_ready"]
    # The oldest frames went, and only they: the model gets one unbroken stretch up to the live audio.
    assert dropped >= 1 and tags == list(range(dropped + 1, dropped + 1 + len(tags)))
    # What was kept is more than 1 s (the cap is 3 s): frames received before the session was
    # ready are at most those the caller could send by the first append, minus what was kept.
    first_append_at = conn.client_event_records("input_audio_buffer.append")[0].t
    could_send = (first_append_at - caller.started_at) / 0.020 + 1
    assert dropped <= could_send - 100, (dropped, could_send)
    _clean(h, caller)


# --- a second start ---------------------------------------------------------------------


def _second_start(caller, call_sid: str = "CA" + "9" * 32) -> dict:
    return {"event": "start", "streamSid": "MZ" + "9" * 32, "start": {
        "streamSid": "MZ" + "9" * 32, "accountSid": caller.account_sid, "callSid": call_sid,
        "tracks": ["inbound"], "customParameters": caller.parameters,
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}


def test_a_second_start_mid_call_is_ignored_and_the_call_goes_on(make_harness):
    h = make_harness(RealtimeScript(responses=[GREETING, ANSWER]))
    caller = h.call()
    caller.wait_heard(GREETING.audio_ms, timeout=6)
    caller.wait_quiet(150)
    caller.send_event(_second_start(caller))
    caller.speak(400)
    caller.wait_heard(GREETING.audio_ms + ANSWER.audio_ms, timeout=6)
    caller.wait_quiet(150)
    assert not caller.closed
    assert len(h.fake.connections) == 1, "no second session for it"
    caller.stop()
    stored = h.wait_ended(caller.call_sid)
    assert stored.row.end_reason == "caller_hangup" and stored.row.stream_sid == caller.stream_sid
    assert stored.row.metrics["frames_dropped"] == {"unexpected_start": 1}
    assert [t[1] for t in stored.turns if t[0] == "agent"] == [GREETING.text, ANSWER.text]
    _clean(h, caller)  # the server's marks and media kept the first stream's SID


def test_a_second_start_mid_call_is_logged(make_harness, caplog):
    h = make_harness(RealtimeScript(responses=[GREETING, ANSWER]))
    caplog.set_level(logging.INFO)
    caller = h.call()
    caller.wait_heard(GREETING.audio_ms, timeout=6)
    caller.send_event(_second_start(caller))
    caller.send_event(_second_start(caller))
    caller.stop()
    h.wait_ended(caller.call_sid)
    lines = [r for r in caplog.records if r.levelno >= logging.WARNING and getattr(r, "kind", None) == "unexpected_start"
             and getattr(r, "call_sid", None) == caller.call_sid]
    assert len(lines) == 1, [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


# --- a rough line ---------------------------------------------------------------------


def test_jittery_bursty_frames_are_all_forwarded_in_order_and_the_call_works(make_harness):
    h = make_harness(RealtimeScript(responses=[GREETING, ANSWER], caller_transcripts=["מה השעות?"]))
    line = dataclasses.replace(ROUGH_LINE, seed=11, burst_chance=0.1, mark_delay_ms=(20.0, 120.0))
    caller = h.call(line=line, tagged=True)
    caller.wait_heard(GREETING.audio_ms, timeout=6)
    caller.wait_quiet(300)
    caller.speak(600)
    caller.wait_heard(GREETING.audio_ms + ANSWER.audio_ms, timeout=8)
    caller.wait_quiet(300)
    sent = caller.frames_sent
    conn = h.fake.connections[0]
    wait_for(lambda: len(conn.client_events("input_audio_buffer.append")) >= sent, 5, message="every frame forwarded")
    wait_for(lambda: len(caller.marks_echoed) == len(caller.marks_reached), 5, message="the delayed echoes")
    caller.stop()

    tags = _appended_tags(conn)
    assert tags[:sent] == list(range(1, sent + 1))
    assert len(conn.speech_segments) == 1, "one utterance: the clumps did not split it or fake a second"
    assert len(conn.client_events("response.create")) == 2
    assert [n for _, n in caller.marks_echoed] == [n for _, n in caller.marks_reached]
    stored = h.wait_ended(caller.call_sid)
    assert stored.row.end_reason == "caller_hangup"
    assert not any(k in stored.row.metrics["frames_dropped"] for k in ("session_not_ready", "realtime_closed"))
    assert [t for t in stored.turns if t[0] == "agent"] == [("agent", GREETING.text, False),
                                                             ("agent", ANSWER.text, False)]
    _clean(h, caller)
