"""Barge-in and greeting protection, as the caller hears them."""
from tests.fakes.realtime_server import RealtimeScript, Reply

GREETING = Reply("שלום, הגעתם למספרת הבדיקה, איך אפשר לעזור?", 1200)
LONG_REPLY = Reply("יש לנו תורים פנויים ביום ראשון בבוקר, ביום שני אחר הצהריים, וביום רביעי בערב, "
                   "ומחיר תספורת הוא שמונים שקלים.", 5000)


def _assert_truncated_at_what_was_heard(h, clear, truncate) -> None:
    """The model is told what the caller had heard when the server cut: never more than a frame
    or so beyond it, and less only by what the caller heard while the cut was on its way (from the
    speech start the server acted on to the clear's arrival: slow on a loaded machine)."""
    conn = next(c for c in h.fake.connections if truncate in c.client_events("conversation.item.truncate"))
    started_at = max(t for t, event in conn.server_events
                     if event["type"] == "input_audio_buffer.speech_started" and t <= clear.t)
    on_the_way_ms = (clear.t - started_at) * 1000
    assert -60 <= clear.playing_heard_ms - truncate["audio_end_ms"] <= 60 + on_the_way_ms, (
        truncate["audio_end_ms"], clear.playing_heard_ms, on_the_way_ms)


def _greet_then_ask(h):
    caller = h.call()
    caller.wait_heard(1200, timeout=5)
    caller.wait_quiet(150)
    caller.speak(600)
    return caller


def test_caller_speaking_over_the_agent_cuts_it_and_the_model_learns_what_was_heard(make_harness):
    # Real-time streaming keeps the response active while it plays, as with the real API
    # on long answers, so barge-in must cancel it too.
    h = make_harness(RealtimeScript(responses=[GREETING, LONG_REPLY, Reply("כן?", 600)], speed=1.0,
                                    caller_transcripts=["מה יש לכם השבוע?", "רגע, ביום ראשון"]))
    caller = _greet_then_ask(h)
    heard_before = caller.wait_heard(1200 + 1500, timeout=8)  # 1.5 s into the long reply
    assert heard_before >= 2700
    caller.speak(600)
    clear = caller.wait_clear(timeout=3)

    conn = h.fake.connections[0]
    truncate = h.fake.wait_for_event("conversation.item.truncate", timeout=3)
    _assert_truncated_at_what_was_heard(h, clear, truncate)
    assert truncate["item_id"] == h.fake.responses[1].item_id
    assert len(conn.client_events("response.cancel")) == 1
    assert h.fake.responses[1].status == "cancelled"
    # Nothing of the cut answer plays after the clear, and the next answer comes.
    caller.wait_heard(caller.heard_ms + 500, timeout=6)
    assert h.fake.responses[2].status in ("in_progress", "completed")
    caller.wait_quiet(150)
    caller.stop()

    stored = h.wait_ended(caller.call_sid)
    cut = [t for t in stored.turns if t[2]]
    assert len(cut) == 1 and cut[0][0] == "agent"
    assert 0 < len(cut[0][1]) < len(LONG_REPLY.text) and LONG_REPLY.text.startswith(cut[0][1])
    # Streaming in real time, the server holds back at most a frame or two: what it drops may be nothing.
    assert stored.row.metrics["barge_in_latency_ms"]
    assert h.fake.invalid_events == [] and h.fake.double_responses == []


def test_barge_in_while_the_answer_is_buffered_truncates_without_cancelling(make_harness):
    # The fake streams faster than real time: the response is done, its audio still plays.
    h = make_harness(RealtimeScript(responses=[GREETING, LONG_REPLY, Reply("כן?", 600)]))
    caller = _greet_then_ask(h)
    caller.wait_heard(1200 + 1000, timeout=8)
    caller.speak(600)
    clear = caller.wait_clear(timeout=3)
    truncate = h.fake.wait_for_event("conversation.item.truncate", timeout=3)
    _assert_truncated_at_what_was_heard(h, clear, truncate)
    assert h.fake.client_events("response.cancel") == []
    assert clear.dropped_ms < 200, "the server holds the audio back; Twilio's buffer stays short"
    assert h.fake.invalid_events == [] and h.fake.double_responses == []
    caller.stop()
    # The rest of the answer, queued on the server, was dropped there and counted as barge-in's.
    dropped = h.wait_ended(caller.call_sid).row.metrics["frames_dropped"]
    assert dropped.get("barge_in", 0) * 20 >= 5000 - 2200 - 500


def test_line_noise_in_the_first_half_second_does_not_cut_the_greeting(make_harness):
    h = make_harness(RealtimeScript(responses=[GREETING, Reply("כן?", 600)]))
    caller = h.call()
    caller.wait_heard(100, timeout=5)
    caller.speak(200)  # a short burst of noise at the start of the greeting
    caller.wait_heard(1200, timeout=5)
    caller.wait_quiet(600)
    assert caller.clears == []
    assert h.fake.client_events("conversation.item.truncate") == []
    assert len(h.fake.client_events("response.create")) == 1, "no answer to the noise"


def test_real_speech_after_the_protected_start_cuts_the_greeting(make_harness):
    h = make_harness(RealtimeScript(responses=[Reply(GREETING.text, 3000), Reply("כן, במה אפשר לעזור?", 800)]))
    caller = h.call()
    caller.wait_heard(900, timeout=5)
    caller.speak(800)
    clear = caller.wait_clear(timeout=3)
    assert clear.playing_heard_ms < 2000
    truncate = h.fake.wait_for_event("conversation.item.truncate", timeout=3)
    assert truncate["item_id"] == h.fake.responses[0].item_id
    _assert_truncated_at_what_was_heard(h, clear, truncate)


def test_speech_that_starts_in_the_protected_start_and_goes_on_cuts_the_greeting(make_harness):
    h = make_harness(RealtimeScript(responses=[Reply(GREETING.text, 3000), Reply("כן?", 600)]))
    caller = h.call()
    caller.wait_heard(100, timeout=5)
    caller.speak(1500)
    clear = caller.wait_clear(timeout=3)
    # Cut once it is clearly not a burst of noise (speech start + VAD silence window +
    # 300 ms): not at once, and not after the greeting.
    conn = h.fake.connections[0]
    started_at = next(t for t, event in conn.server_events if event["type"] == "input_audio_buffer.speech_started")
    assert clear.t - started_at >= 0.700 - 0.020, "the server waited out the noise window"
    assert 700 <= clear.playing_heard_ms < 3000
