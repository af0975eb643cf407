"""Whole calls over loopback: Twilio caller → our server → fake Realtime API → back."""
import base64
import dataclasses

from bench.realtime_peer import agent_audio_byte
from services.live_calls import this_process
from services.twilio_protocol import MULAW_SILENCE
from tests.conftest import CALLER_NUMBER
from tests.fakes.realtime_server import RealtimeScript, Reply
from tests.fakes.twilio_caller import FRAME_BYTES, SILENCE_FRAME, SPEECH_FRAME, FakeTwilioCall
from tests.fakes.waiting import wait_for
from tests.harness import TEST_TIMING

GREETING = Reply("שלום, הגעתם למספרת הבדיקה, איך אפשר לעזור?", 1400)


def test_a_whole_call_greets_first_answers_twice_and_is_stored(make_harness):
    # The update's resend and deadline as deployed (3 s, 8 s), not the tests' 0.6 s: on a
    # loaded machine a confirmation can take longer than that, and this call must see one update.
    h = make_harness(RealtimeScript(
        responses=[GREETING, Reply("בשמחה, לאיזה יום?", 1000), Reply("מעולה, נתראה ביום שלישי.", 1000)],
        caller_transcripts=["אני רוצה לקבוע תור", "ביום שלישי בבוקר"]),
        timing=dataclasses.replace(TEST_TIMING, session_update_retry_s=3.0, session_update_timeout_s=8.0))
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
    # Twilio's μ-law both ways: anything else would reach the caller as noise.
    assert session["audio"]["input"]["format"] == session["audio"]["output"]["format"] == {"type": "audio/pcmu"}
    assert [tool["name"] for tool in session["tools"]] == ["end_call"]
    creates = conn.client_events("response.create")
    assert len(creates) == 3
    assert "שלום, הגעתם למספרת הבדיקה" in creates[0]["response"]["instructions"]
    assert h.fake.invalid_events == [] and h.fake.double_responses == []
    assert caller.protocol_errors == []


def test_the_greeting_goes_right_behind_session_update_not_a_round_trip_later(make_harness):
    # The API applies a session's events in order: the greeting is spoken under the update sent
    # before it. Waiting for session.updated would cost every call a round trip to the API.
    h = make_harness(RealtimeScript(responses=[GREETING], session_updated_delay_ms=400))
    caller = h.call()
    caller.wait_heard(200, timeout=5)
    conn = h.fake.connections[0]
    conn.wait_for_server_event("session.updated")
    update, create = conn.client_event_records("session.update")[0], conn.client_event_records("response.create")[0]
    confirmed_at = next(t for t, e in conn.server_events if e["type"] == "session.updated")
    assert update.t <= create.t < confirmed_at
    assert len(conn.client_events("response.create")) == 1, "asked for once: not again at the confirmation"
    assert h.fake.invalid_events == [] and h.fake.double_responses == []


class _TapeCall(FakeTwilioCall):
    """A caller that keeps every frame it sent and the audio of every media message it got.

    Its silent frames are each different (every byte still μ-law silence, so no VAD hears
    them): the frame number in bits of 0xff and 0x7f, so a frame lost, repeated, reordered or
    altered on the way shows.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sent_payloads: list[str] = []
        self.received_audio: list[bytes] = []

    def _send_json(self, message: dict, sequenced: bool = True) -> bool:
        if message["event"] == "media":
            media = dict(message["media"])
            if base64.b64decode(media["payload"]) == SILENCE_FRAME:
                k = int(media["chunk"])
                media["payload"] = base64.b64encode(bytes(0x7F if k >> (i % 32) & 1 else 0xFF
                                                          for i in range(FRAME_BYTES))).decode()
            message = dict(message, media=media)
        sent = super()._send_json(message, sequenced)
        if sent and message["event"] == "media":
            self.sent_payloads.append(message["media"]["payload"])
        return sent

    def _on_media(self, message: dict) -> None:
        self.received_audio.append(base64.b64decode(message["media"]["payload"]))
        super()._on_media(message)


def _tape_call(h) -> _TapeCall:
    call_sid, placed = h.place()
    caller = _TapeCall(h.live.media_url, call_sid, placed.parameters).start()
    h.callers.append(caller)
    return caller


def test_caller_audio_reaches_the_model_as_sent(make_harness):
    h = make_harness(RealtimeScript(responses=[Reply("שלום", 600), Reply("כן?", 400)]))
    caller = _tape_call(h)
    caller.wait_heard(600, timeout=5)
    caller.wait_quiet(150)
    caller.speak(300)
    caller.wait_heard(1000, timeout=5)
    caller.stop()
    row = h.wait_ended(caller.call_sid).row
    conn = h.fake.connections[0]
    wait_for(lambda: conn.closed, 5, message="the Realtime session to close")

    appended = [event["audio"] for event in conn.client_events("input_audio_buffer.append")]
    # Frames held while the session is set up are capped at HELD_FRAMES, the oldest dropped
    # first (a set-up that slow is possible on a loaded machine): every other frame arrives.
    held_over = row.metrics.get("frames_dropped", {}).get("session_not_ready", 0)
    assert appended == caller.sent_payloads[held_over:], "every frame, in order, byte for byte"
    assert row.metrics["frames_in"] == len(appended)
    speech = base64.b64encode(SPEECH_FRAME).decode()
    assert appended.count(speech) == 300 // 20 and len(set(appended)) == len(appended) - 300 // 20 + 1
    assert conn.speech_segments and len(conn.responses) == 2, "the model heard the speech and answered it"


def test_agent_audio_reaches_the_caller_as_the_model_sent_it(make_harness):
    # Deltas of 30 ms straddle the 20 ms frames; 990 ms leaves a half frame, filled with silence.
    greeting, answer = Reply("שלום, הגעתם למספרת הבדיקה", 600), Reply("כן, בשמחה.", 990)
    h = make_harness(RealtimeScript(responses=[greeting, answer], chunk_ms=30))
    caller = _tape_call(h)
    caller.wait_heard(greeting.audio_ms, timeout=5)
    caller.wait_quiet(150)
    caller.speak(300)
    wait_for(lambda: len(caller.segments) == 2 and caller.segments[1].end_mark
             and caller.echoed(caller.segments[1].end_mark), 8, message="the whole answer heard, to its mark")

    sent = [base64.b64decode(e["delta"]) for e in h.fake.connections[0].server_event_list("response.output_audio.delta")]
    first, second = bytes([agent_audio_byte(0)]), bytes([agent_audio_byte(1)])
    assert b"".join(sent) == first * greeting.audio_ms * 8 + second * answer.audio_ms * 8
    assert b"".join(caller.received_audio) == (first * greeting.audio_ms * 8 + second * answer.audio_ms * 8
                                               + bytes([MULAW_SILENCE]) * (FRAME_BYTES - answer.audio_ms * 8 % FRAME_BYTES))
    assert all(len(frame) == FRAME_BYTES for frame in caller.received_audio), "whole 20 ms frames, as Twilio plays"
    # Each answer is followed by its own mark, and the caller heard each one whole.
    assert [(s.received_ms, s.heard_ms, s.end_mark is not None) for s in caller.segments] == [
        (600, 600, True), (1000, 1000, True)]
    assert caller.protocol_errors == []


def test_the_call_row_knows_the_caller(harness):
    caller = harness.call()
    caller.wait_heard(400, timeout=5)
    caller.stop()
    row = harness.wait_ended(caller.call_sid).row
    assert row.from_number == CALLER_NUMBER and row.direction == "inbound"
