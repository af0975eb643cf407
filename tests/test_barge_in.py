"""Barge-in and greeting protection, as the caller hears them."""
import base64
import dataclasses
import json

from tests.fakes.realtime_server import RealtimeScript, Reply, agent_audio_byte
from tests.fakes.twilio_caller import FakeTwilioCall
from tests.fakes.waiting import wait_for
from tests.harness import TEST_TIMING

# The cut as it happens at the first sound of speech; hold-then-decide (the default) is
# tests/test_barge_in_hold.py's.
IMMEDIATE = {"barge_in_mode": "immediate"}
GREETING = Reply("שלום, הגעתם למספרת הבדיקה, איך אפשר לעזור?", 1200)
LONG_REPLY = Reply("יש לנו תורים פנויים ביום ראשון בבוקר, ביום שני אחר הצהריים, וביום רביעי בערב, "
                   "ומחיר תספורת הוא שמונים שקלים.", 5000)


class WireCall(FakeTwilioCall):
    """The fake caller, keeping also what the server sent in the order it came: ("media", the
    response byte of its audio), ("mark", name), ("clear", None)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.wire: list[tuple[str, object]] = []

    def _on_message(self, text: str) -> None:
        try:
            message = json.loads(text)
            if message["event"] == "media":
                audio = set(base64.b64decode(message["media"]["payload"])) - {0xFF}  # less the padding
                self.wire.append(("media", min(audio) if audio else None))
            else:
                self.wire.append((message["event"], (message.get("mark") or {}).get("name")))
        except (ValueError, KeyError, TypeError, AttributeError):
            self.wire.append(("unreadable", text[:80]))  # the fake's own checks report it
        super()._on_message(text)

    def audio_after_clear(self) -> list[int | None]:
        """The response byte of each frame that came after the first `clear`."""
        cleared = self.wire.index(("clear", None))
        return [byte for event, byte in self.wire[cleared:] if event == "media"]


def _call(h) -> WireCall:
    call_sid, placed = h.place()
    caller = WireCall(h.live.media_url, call_sid, placed.parameters).start()
    h.callers.append(caller)
    return caller


def _assert_the_cut_answer_stops_at_the_clear(h, caller: WireCall, truncate) -> None:
    """Once the server has sent `clear`, no frame of the cut response reaches the caller, however
    much of it was queued or still streaming; the next answer's frames do (waited for, so that
    a server still forwarding the old one has had the time to show it)."""
    conn = next(c for c in h.fake.connections if any(r.item_id == truncate["item_id"] for r in c.responses))
    cut = agent_audio_byte(next(i for i, r in enumerate(conn.responses) if r.item_id == truncate["item_id"]))
    wait_for(lambda: any(byte not in (cut, None) for byte in caller.audio_after_clear()), 8,
             message="the next answer's audio after the clear")
    after = caller.audio_after_clear()
    assert cut not in after, f"{after.count(cut)} frames of the cut answer after the clear"


def _assert_truncated_at_what_was_heard(h, clear, truncate) -> None:
    """The model is told what the caller had heard when the server cut: never more than a few
    frames beyond it (the phone's playout may start late on a loaded machine, by up to the
    pacer's lead), and less only by what the caller heard while the cut was on its way (from the
    speech start the server acted on to the clear's arrival: slow on a loaded machine)."""
    conn = next(c for c in h.fake.connections if truncate in c.client_events("conversation.item.truncate"))
    started_at = max(t for t, event in conn.server_events
                     if event["type"] == "input_audio_buffer.speech_started" and t <= clear.t)
    on_the_way_ms = (clear.t - started_at) * 1000
    assert -100 <= clear.playing_heard_ms - truncate["audio_end_ms"] <= 60 + on_the_way_ms, (
        truncate["audio_end_ms"], clear.playing_heard_ms, on_the_way_ms)


def _greet_then_ask(h):
    caller = _call(h)
    caller.wait_heard(1200, timeout=5)
    caller.wait_quiet(150)
    caller.speak(600)
    return caller


def test_caller_speaking_over_the_agent_cuts_it_and_the_model_learns_what_was_heard(make_harness):
    # Real-time streaming keeps the response active while it plays, as with the real API
    # on long answers, so barge-in must cancel it too.
    h = make_harness(RealtimeScript(responses=[GREETING, LONG_REPLY, Reply("כן?", 600)], speed=1.0,
                                    caller_transcripts=["מה יש לכם השבוע?", "רגע, ביום ראשון"]), business=IMMEDIATE)
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
    # Nothing of the cut answer plays after the clear, though it streamed until the cancel; the next answer comes.
    _assert_the_cut_answer_stops_at_the_clear(h, caller, truncate)
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
    h = make_harness(RealtimeScript(responses=[GREETING, LONG_REPLY, Reply("כן?", 600)]), business=IMMEDIATE)
    caller = _greet_then_ask(h)
    caller.wait_heard(1200 + 1000, timeout=8)
    caller.speak(600)
    clear = caller.wait_clear(timeout=3)
    truncate = h.fake.wait_for_event("conversation.item.truncate", timeout=3)
    _assert_truncated_at_what_was_heard(h, clear, truncate)
    assert h.fake.client_events("response.cancel") == []
    # Paced, Twilio holds the lead and what its playout lags by; unpaced, it would hold the 2.8 s left.
    assert clear.dropped_ms < 1000, "the server holds the audio back; Twilio's buffer stays short"
    _assert_the_cut_answer_stops_at_the_clear(h, caller, truncate)
    assert h.fake.invalid_events == [] and h.fake.double_responses == []
    caller.stop()
    # The rest of the answer, queued on the server, was dropped there and counted as barge-in's.
    dropped = h.wait_ended(caller.call_sid).row.metrics["frames_dropped"]
    assert dropped.get("barge_in", 0) * 20 >= 5000 - 2200 - 500


def test_line_noise_in_the_protected_start_does_not_cut_the_greeting(make_harness):
    # Margins of seconds, not of the machine's speed: the burst starts well inside a 1.5 s protected
    # start; the VAD has it over 600 ms later (200 ms, then its 400 ms silence window); the server
    # decides 2.4 s after it starts (silence window and a 2 s noise allowance), so late events have
    # 1.8 s, and a wrong cut would come while the 5 s greeting still has over 2 s to play.
    timing = dataclasses.replace(TEST_TIMING, greeting_protect_ms=1500, greeting_noise_max_ms=2000)
    h = make_harness(RealtimeScript(responses=[Reply(GREETING.text, 5000), Reply("כן?", 600)]), timing=timing)
    caller = h.call()
    caller.wait_heard(100, timeout=5)
    caller.speak(200)  # a short burst of noise at the start of the greeting
    wait_for(lambda: caller.clears or caller.heard_ms >= 5000, 10, message="the greeting heard to its end")
    assert caller.clears == [], f"cut at {caller.clears[0].playing_heard_ms} ms"
    caller.wait_quiet(600)
    assert h.fake.client_events("conversation.item.truncate") == []
    assert len(h.fake.client_events("response.create")) == 1, "no answer to the noise"


def test_real_speech_after_the_protected_start_cuts_the_greeting(make_harness):
    h = make_harness(RealtimeScript(responses=[Reply(GREETING.text, 3000), Reply("כן, במה אפשר לעזור?", 800)]),
                     business=IMMEDIATE)
    caller = _call(h)
    caller.wait_heard(900, timeout=5)
    caller.speak(800)
    clear = caller.wait_clear(timeout=3)
    assert clear.playing_heard_ms < 2000
    truncate = h.fake.wait_for_event("conversation.item.truncate", timeout=3)
    assert truncate["item_id"] == h.fake.responses[0].item_id
    _assert_truncated_at_what_was_heard(h, clear, truncate)
    _assert_the_cut_answer_stops_at_the_clear(h, caller, truncate)


def test_speech_that_starts_in_the_protected_start_and_goes_on_cuts_the_greeting(make_harness):
    # Margins of seconds: the speech starts well inside a 1.5 s protected start, the server decides
    # 1.6 s after it starts (VAD silence window and a 1.2 s noise allowance, longer than what is left
    # of the protection), and the speech goes on for 4 s, the greeting for 6 s.
    timing = dataclasses.replace(TEST_TIMING, greeting_protect_ms=1500, greeting_noise_max_ms=1200)
    h = make_harness(RealtimeScript(responses=[Reply(GREETING.text, 6000), Reply("כן?", 600)]), timing=timing)
    caller = _call(h)
    caller.wait_heard(100, timeout=5)
    caller.speak(4000)
    clear = caller.wait_clear(timeout=5)
    # Cut once it is clearly not a burst of noise (speech start + VAD silence window + noise
    # allowance): not at once, and not once the speech is over.
    conn = h.fake.connections[0]
    started_at = next(t for t, event in conn.server_events if event["type"] == "input_audio_buffer.speech_started")
    assert clear.t - started_at >= 1.600 - 0.020, "the server waited out the noise window"
    assert clear.t < caller.speech_log[0].started_at + 4.0, "while the caller was still speaking"
    assert clear.playing_heard_ms >= 1000, "well after the speech began (at 100 ms)"
    truncate = h.fake.wait_for_event("conversation.item.truncate", timeout=3)
    assert truncate["item_id"] == h.fake.responses[0].item_id
    _assert_the_cut_answer_stops_at_the_clear(h, caller, truncate)
