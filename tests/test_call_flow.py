"""Whole calls over loopback: Twilio caller → our server → fake Realtime API → back."""
from services.live_calls import this_process
from tests.conftest import CALLER_NUMBER
from tests.fakes.realtime_server import RealtimeScript, Reply

GREETING = Reply("שלום, הגעתם למספרת הבדיקה, איך אפשר לעזור?", 1400)


def test_a_whole_call_greets_first_answers_twice_and_is_stored(make_harness):
    h = make_harness(RealtimeScript(
        responses=[GREETING, Reply("בשמחה, לאיזה יום?", 1000), Reply("מעולה, נתראה ביום שלישי.", 1000)],
        caller_transcripts=["אני רוצה לקבוע תור", "ביום שלישי בבוקר"]))
    caller = h.call()
    caller.wait_heard(1400, timeout=5)
    caller.wait_quiet(200)
    assert caller.clears == [], "nothing cut the greeting"
    caller.speak(700)
    caller.wait_heard(2400, timeout=6)
    caller.wait_quiet(200)
    caller.speak(700)
    caller.wait_heard(3400, timeout=6)
    caller.wait_quiet(200)
    caller.stop()

    stored = h.wait_ended(caller.call_sid)
    assert stored.turns == [
        ("agent", GREETING.text, False),
        ("caller", "אני רוצה לקבוע תור", False),
        ("agent", "בשמחה, לאיזה יום?", False),
        ("caller", "ביום שלישי בבוקר", False),
        ("agent", "מעולה, נתראה ביום שלישי.", False),
    ]
    row = stored.row
    assert row.status == "completed" and row.end_reason == "caller_hangup"
    assert row.duration_s > 4 and row.answered_at is not None and row.stream_sid == caller.stream_sid
    assert row.served_by == this_process()
    assert row.metrics["greeting_latency_ms"] is not None
    assert len(row.metrics["response_latency_ms"]) == 2
    # Each of the three responses started from silence: its forwarding was timed.
    assert len(row.metrics["forwarding_ms"]) == 3 and all(0 <= v < 1000 for v in row.metrics["forwarding_ms"])
    assert row.metrics["frames_out"] >= 3400 // 20 and row.metrics["frames_in"] > 100
    assert row.usage["responses"] == 3 and row.usage["total_tokens"] > 0 and row.cost_usd > 0
    assert row.prompt_info["layer_chars"]["system"] > 0

    # What the Realtime API saw: one GA session, the greeting first, nothing it would reject.
    conn = h.fake.connections[0]
    assert conn.authorization == "Bearer sk-test" and conn.model == "gpt-realtime"
    updates = conn.client_events("session.update")
    assert len(updates) == 1
    session = updates[0]["session"]
    assert session["type"] == "realtime" and session["audio"]["output"]["voice"] == "alloy"
    assert "מספרה בתל אביב" in session["instructions"]
    assert session["audio"]["input"]["transcription"]["language"] == "he"
    creates = conn.client_events("response.create")
    assert len(creates) == 3
    assert "שלום, הגעתם למספרת הבדיקה" in creates[0]["response"]["instructions"]
    assert h.fake.invalid_events == [] and h.fake.double_responses == []
    assert caller.protocol_errors == []


def test_the_greeting_is_not_sent_before_the_session_is_confirmed(make_harness):
    h = make_harness(RealtimeScript(responses=[GREETING], session_updated_delay_ms=400))
    caller = h.call()
    caller.wait_heard(200, timeout=5)
    conn = h.fake.connections[0]
    first_create = conn.client_event_records("response.create")[0]
    update_sent = conn.client_event_records("session.update")[0]
    assert first_create.t - update_sent.t >= 0.39


def test_caller_audio_reaches_the_model_as_sent(harness):
    caller = harness.call()
    caller.wait_heard(600, timeout=5)
    conn = harness.fake.connections[0]
    appends = conn.client_events("input_audio_buffer.append")
    assert len(appends) > 10
    assert all(set(event) == {"type", "audio"} and event["audio"] for event in appends)


def test_the_call_row_knows_the_caller(harness):
    caller = harness.call()
    caller.wait_heard(400, timeout=5)
    caller.stop()
    row = harness.wait_ended(caller.call_sid).row
    assert row.from_number == CALLER_NUMBER and row.direction == "inbound"
