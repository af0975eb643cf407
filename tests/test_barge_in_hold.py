"""Barge-in, hold then decide (the default mode): what the caller hears when they speak over the agent.

A backchannel ("כן") holds the agent for a moment and it goes on where the caller stopped hearing
it, with nothing cleared, cancelled or truncated; words that take the turn, or speech longer
than the bound, cut it as before. Margins are of whole seconds; the waits poll.
"""
import base64
import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import gevent
import pytest
import requests

from services import backchannel
from services.playback import Playback
from services.twilio_protocol import FRAME_BYTES
from tests.fakes.realtime_server import RealtimeScript, Reply
from tests.fakes.twilio_caller import FakeTwilioCall
from tests.fakes.waiting import wait_for
from tests.harness import TEST_TIMING
from tests.manual_clock import ManualClock

GREETING = Reply("שלום, הגעתם למספרת הבדיקה, איך אפשר לעזור?", 600)
QUESTION = "מה יש לכם השבוע?"
LONG_REPLY = Reply("יש לנו תורים פנויים ביום ראשון בבוקר, ביום שני אחר הצהריים, וביום רביעי בערב, "
                   "ומחיר תספורת הוא שמונים שקלים.", 4000)
NEXT = Reply("בשמחה, לאיזו שעה?", 600)
# A wide bound for the speech (a 200 ms "כן" is reported stopped ~600 ms after it starts) and for
# its transcript, which the fake sends right after the commit; no silence check comes to answer
# in place of the caller's turn.
HOLD_TIMING = dataclasses.replace(TEST_TIMING, barge_in_hold_ms=1500, barge_in_transcript_wait_ms=1500, silence_s=60)


class TapeCall(FakeTwilioCall):
    """The fake caller, keeping the audio of every media message in the order it came, and
    where the server cleared."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.received_audio: list[bytes] = []

    def _on_media(self, message: dict) -> None:
        self.received_audio.append(base64.b64decode(message["media"]["payload"]))
        super()._on_media(message)

    def gaps_in(self, segment_index: int, min_ms: float = 150.0) -> list[tuple[float, float]]:
        """Silences (start time, ms) inside one agent item as the caller played it; shorter ones
        than `min_ms` are left out (the fake's own playout ticks run late on a loaded machine)."""
        log = [entry for entry in self.playout_log if entry[2] == segment_index]
        found = []
        for (t1, ms1, _), (t2, _, _) in zip(log, log[1:]):
            gap = (t2 - t1) * 1000 - ms1
            if gap >= min_ms:
                found.append((t1 + ms1 / 1000, gap))
        return found


def _script(caller_transcripts, **changes) -> RealtimeScript:
    return RealtimeScript(responses=[GREETING, LONG_REPLY, NEXT], caller_transcripts=caller_transcripts,
                          transcript_timing="commit", distinct_audio=True, **changes)


def _call(h) -> TapeCall:
    call_sid, placed = h.place()
    caller = TapeCall(h.live.media_url, call_sid, placed.parameters).start()
    h.callers.append(caller)
    return caller


def _ask_then_hear(h, into_ms: int = 1000) -> TapeCall:
    """Greeted, the caller asks; `into_ms` of the long answer heard."""
    caller = _call(h)
    caller.wait_heard(GREETING.audio_ms, timeout=5)
    caller.wait_quiet(150)
    caller.speak(600)
    caller.wait_heard(GREETING.audio_ms + into_ms, timeout=8)
    return caller


def _sent_audio(conn, item_id: str) -> bytes:
    return b"".join(base64.b64decode(e["delta"]) for e in conn.server_event_list("response.output_audio.delta")
                    if e["item_id"] == item_id)


def _assert_cut_at_what_was_heard(h, caller: TapeCall, conn) -> dict:
    """Cut as before: a clear, a truncate of the long answer at what the caller heard of it (the
    held audio played out: all of it, to the frame), and none of it played after the clear."""
    caller.wait_clear(timeout=8)
    truncate = h.fake.wait_for_event("conversation.item.truncate", timeout=5)
    answer = conn.responses[1]
    assert truncate["item_id"] == answer.item_id
    heard = caller.segments[1].heard_ms
    assert truncate["audio_end_ms"] == pytest.approx(heard, abs=20), (truncate, heard)
    wait_for(lambda: len(caller.segments) > 2 and caller.segments[2].heard_ms > 0, 8, message="the next answer heard")
    assert caller.segments[1].heard_ms == heard, "nothing of the cut answer after the clear"
    assert conn.truncate_errors == [] and h.fake.invalid_events == [] and h.fake.double_responses == []
    return truncate


@pytest.mark.parametrize("speed", [None, 1.0], ids=["answer_buffered", "answer_streaming"])
def test_a_backchannel_holds_the_agent_and_it_goes_on_with_the_very_next_bytes(make_harness, speed):
    h = make_harness(_script([QUESTION, "כן"], speed=speed), timing=HOLD_TIMING)
    caller = _ask_then_hear(h)
    caller.speak(200)  # "כן"
    answer = h.fake.responses[1]
    wait_for(lambda: len(caller.segments) > 1 and caller.segments[1].heard_ms >= LONG_REPLY.audio_ms, 12,
             message="the whole answer heard")
    caller.wait_quiet(300)
    conn = h.fake.connections[0]

    # Nothing cut: no clear, no cancel, no truncate, and no answer to the backchannel.
    assert caller.clears == []
    assert conn.client_events("response.cancel") == [] and conn.client_events("conversation.item.truncate") == []
    assert len(conn.client_events("response.create")) == 2 and answer.status == "completed"
    # The caller heard the answer whole, byte for byte as the model sent it, and one silence in it:
    # the hold, after the caller began to speak, no longer than the hold's bound.
    segment = caller.segments[1]
    assert segment.received_ms == segment.heard_ms == LONG_REPLY.audio_ms and segment.cleared_ms == 0
    assert b"".join(caller.received_audio)[GREETING.audio_ms * 8:] == _sent_audio(conn, answer.item_id)
    spoke_at = caller.speech_log[1].started_at
    bound_ms = HOLD_TIMING.barge_in_hold_ms + 400 + HOLD_TIMING.barge_in_transcript_wait_ms
    # The hold's silence begins soon after the caller speaks. Others are not the hold's: an answer
    # streamed in real time may come late now and then, and on a loaded machine the fake's own
    # playout ticks may run late.
    gaps = [gap for gap in caller.gaps_in(1) if spoke_at - 0.1 <= gap[0] <= spoke_at + 1.0]
    assert len(gaps) == 1, caller.gaps_in(1)
    [(gap_at, gap_ms)] = gaps
    assert gap_at >= spoke_at, "the agent was heard until the caller spoke"
    assert 200 <= gap_ms <= bound_ms, gap_ms

    caller.stop()
    stored = h.wait_ended(caller.call_sid)
    assert stored.turns == [("agent", GREETING.text, False), ("caller", QUESTION, False),
                            ("agent", LONG_REPLY.text, False), ("caller", "כן", False)]
    m = stored.row.metrics
    assert (m["barge_in_holds"], m["barge_in_resumes"], m["barge_in_cuts"]) == (1, 1, 0)
    [silence_ms] = m["resume_silence_ms"]
    assert 0 < silence_ms <= bound_ms
    assert len(m["barge_in_latency_ms"]) == 1, "the agent fell silent once: at the hold"


def test_words_that_take_the_turn_cut_as_before_and_are_answered(make_harness):
    h = make_harness(_script([QUESTION, "לא, ביום שני"], speed=1.0), timing=HOLD_TIMING)
    caller = _ask_then_hear(h)
    caller.speak(300)
    conn = h.fake.connections[0]
    _assert_cut_at_what_was_heard(h, caller, conn)
    # The response was still streaming: cancelled; the caller's words get their answer.
    assert len(conn.client_events("response.cancel")) == 1 and conn.responses[1].status == "cancelled"
    assert len(conn.client_events("response.create")) == 3
    # Cut once the transcript said so: after the speech stopped, not at its start.
    stopped_at = next(t for t, e in conn.server_events if e["type"] == "input_audio_buffer.speech_stopped"
                      and t > caller.speech_log[1].started_at)
    assert caller.clears[0].t >= stopped_at
    wait_for(lambda: caller.segments[2].end_mark and caller.echoed(caller.segments[2].end_mark), 8,
             message="the answer heard to its end")
    caller.stop()
    stored = h.wait_ended(caller.call_sid)
    cut = [t for t in stored.turns if t[2]]
    assert len(cut) == 1 and LONG_REPLY.text.startswith(cut[0][1]) and cut[0][1] != LONG_REPLY.text
    assert ("caller", "לא, ביום שני", False) in stored.turns and ("agent", NEXT.text, False) in stored.turns
    m = stored.row.metrics
    assert (m["barge_in_holds"], m["barge_in_resumes"], m["barge_in_cuts"]) == (1, 0, 1)


def test_speech_longer_than_the_bound_cuts_while_the_caller_still_speaks(make_harness):
    # 600 ms of speech and the VAD's 400 ms window: cut about 1 s after it starts, 2 s before it ends,
    # though its transcript ("כן") would have let the agent go on.
    h = make_harness(_script([QUESTION, "כן"]), timing=dataclasses.replace(HOLD_TIMING, barge_in_hold_ms=600))
    caller = _ask_then_hear(h)
    caller.speak(3000)
    conn = h.fake.connections[0]
    _assert_cut_at_what_was_heard(h, caller, conn)
    speech = caller.speech_log[1]
    assert caller.clears[0].t < speech.started_at + 3.0, "while the caller was still speaking"
    assert not any(e["type"] == "input_audio_buffer.speech_stopped" and t > speech.started_at
                   for t, e in conn.server_events if t < caller.clears[0].t)
    assert conn.client_events("response.cancel") == [], "the answer was all in: nothing to cancel"
    caller.stop()
    m = h.wait_ended(caller.call_sid).row.metrics
    assert (m["barge_in_holds"], m["barge_in_resumes"], m["barge_in_cuts"]) == (1, 0, 1)


def test_a_transcript_later_than_its_wait_cuts_and_the_turn_is_answered(make_harness):
    timing = dataclasses.replace(HOLD_TIMING, barge_in_transcript_wait_ms=300)
    h = make_harness(_script([QUESTION, "כן"], transcript_delay_ms=2500), timing=timing)
    caller = _ask_then_hear(h)
    caller.speak(200)
    conn = h.fake.connections[0]
    _assert_cut_at_what_was_heard(h, caller, conn)
    assert len(conn.client_events("response.create")) == 3, "the held turn answered once the cut came"
    late = conn.wait_for_server_event("conversation.item.input_audio_transcription.completed", count=2, timeout=5)
    assert late["transcript"] == "כן"
    assert caller.clears[0].t < next(t for t, e in conn.server_events if e is late), "cut before it came"
    caller.stop()
    m = h.wait_ended(caller.call_sid).row.metrics
    assert (m["barge_in_resumes"], m["barge_in_cuts"]) == (0, 1)


def test_immediate_mode_cuts_at_the_first_sound_even_for_a_backchannel(make_harness):
    h = make_harness(_script([QUESTION, "כן"], speed=1.0), timing=HOLD_TIMING, business={"barge_in_mode": "immediate"})
    caller = _ask_then_hear(h)
    caller.speak(1500)
    clear = caller.wait_clear(timeout=5)
    conn = h.fake.connections[0]
    speech = caller.speech_log[1]
    assert clear.t < speech.started_at + 1.5 and clear.playing is caller.segments[1], "cut while it played"
    truncate = h.fake.wait_for_event("conversation.item.truncate", timeout=3)
    assert truncate["audio_end_ms"] == pytest.approx(clear.playing_heard_ms, abs=60 + (clear.t - speech.started_at) * 1000)
    assert len(conn.client_events("response.cancel")) == 1
    caller.stop()
    m = h.wait_ended(caller.call_sid).row.metrics
    assert (m["barge_in_holds"], m["barge_in_resumes"], m["barge_in_cuts"]) == (0, 0, 1)


def test_off_never_cuts_and_answers_the_caller_after_the_agent(make_harness):
    h = make_harness(_script([QUESTION, "ומה המחיר?"]), timing=HOLD_TIMING, business={"barge_in_mode": "off"})
    caller = _ask_then_hear(h)
    caller.speak(1500)
    wait_for(lambda: len(caller.segments) > 2 and caller.segments[2].heard_ms >= NEXT.audio_ms, 12,
             message="the answer to the words said over the agent")
    conn = h.fake.connections[0]
    assert caller.clears == [] and conn.client_events("conversation.item.truncate") == []
    assert caller.segments[1].heard_ms == LONG_REPLY.audio_ms and caller.gaps_in(1) == [], "never held"
    caller.stop()
    m = h.wait_ended(caller.call_sid).row.metrics
    assert (m["barge_in_holds"], m["barge_in_resumes"], m["barge_in_cuts"]) == (0, 0, 0)


def test_a_business_word_is_a_backchannel_and_metrics_count_holds_resumes_and_cuts(make_harness):
    h = make_harness(_script([QUESTION, "יאללה"]), timing=HOLD_TIMING, business={"backchannel_words": ["יאללה"]})

    def counted(action: str) -> float:
        text = requests.get(f"{h.live.base_url}/metrics", timeout=5).text
        match = re.search(rf'^call_barge_ins_total{{action="{action}"}} (\S+)$', text, re.M)
        return float(match[1]) if match else 0.0

    before = {action: counted(action) for action in ("held", "resumed", "cut")}
    caller = _ask_then_hear(h)
    caller.speak(200)
    wait_for(lambda: caller.segments[1].heard_ms >= LONG_REPLY.audio_ms, 12, message="the whole answer heard")
    assert caller.clears == [] and caller.segments[1].received_ms == LONG_REPLY.audio_ms
    caller.stop()
    h.wait_ended(caller.call_sid)
    assert {action: counted(action) - before[action] for action in before} == {"held": 1, "resumed": 1, "cut": 0}
    assert "call_barge_in_resume_silence_seconds_count" in requests.get(f"{h.live.base_url}/metrics", timeout=5).text


# --- the pacer's hold, on a manual clock ----------------------------------------------------


def test_a_held_stream_sends_nothing_more_and_resumes_with_the_next_frame():
    clock = ManualClock(4096.7)
    sent: list[tuple[float, dict]] = []
    pb = Playback(lambda texts: sent.extend((clock.elapsed_ms, json.loads(t)) for t in texts), "MZ1", lead_ms=40,
                  clock=clock, sleep=clock.sleep)
    tx = gevent.spawn(pb.run)
    try:
        clock.settle()
        audio = b"".join(bytes([1 + k]) * FRAME_BYTES for k in range(50))  # 1 s, each frame its own byte
        pb.enqueue("r1", "i1", audio[:25 * FRAME_BYTES])
        clock.advance_ms(200)
        pb.hold()
        before = len(sent)
        pb.enqueue("r1", "i1", audio[25 * FRAME_BYTES:])  # the response goes on filling the queue
        pb.end_item("r1", "i1")
        clock.advance_ms(600)
        assert len(sent) == before, "nothing leaves while held"
        assert pb.is_playing() and pb.heard_ms("i1") == before * 20, "what was sent has played out, no more"
        assert pb.resume() == 800 - before * 20, "the silence since the last frame sent was heard"
        clock.advance_ms(1500)
        media = [base64.b64decode(m["media"]["payload"]) for _, m in sent if m["event"] == "media"]
        assert b"".join(media) == audio, "every frame once, in order, from the one after the hold"
        assert [m["mark"]["name"] for _, m in sent if m["event"] == "mark"] == ["item:i1"]
        assert min(t for t, m in sent[before:]) == 800, "the first frame after the hold left at the resume"
        assert pb.heard_ms("i1") == 1000 and pb.resume() is None
        # A hold that ends in a cut: clear drops what was queued, and the next audio is not held.
        def media_sent() -> int:
            return sum(m["event"] == "media" for _, m in sent)

        pb.enqueue("r2", "i2", audio)  # an idle stream: its lead leaves at once
        pb.hold()
        held_at = media_sent()
        clock.advance_ms(100)
        assert media_sent() == held_at and pb.clear().item_id == "i2"
        pb.enqueue("r3", "i3", audio[:5 * FRAME_BYTES])
        clock.advance_ms(200)
        assert media_sent() == held_at + 5
    finally:
        tx.kill()


# --- the words, and the settings --------------------------------------------------------


def test_backchannel_words_are_read_without_niqqud_punctuation_or_drawn_out_letters():
    for said in ("כן", "כן, כן.", "כֵּן", "אהההה", "אה... כן", "Okay!", "uh-huh", "Mmm", "בסדר", "נכון", "", "..."):
        assert backchannel.is_backchannel(said), said
    for said in ("לא", "רגע", "כן, ביום ראשון", "ok so what time", "בסדר גמור"):
        assert not backchannel.is_backchannel(said), said
    words = backchannel.word_set(["בסדר גמור", "יאללה"])
    assert backchannel.is_backchannel("בסדר גמור", words) and backchannel.is_backchannel("יאללה!", words)
    assert not backchannel.is_backchannel("יאללה", backchannel.DEFAULT_SET)


def test_the_api_sets_the_mode_and_words_and_refuses_what_does_not_fit(live_server):
    base = f"{live_server.base_url}/api/businesses"
    created = requests.post(base, json={"name": "מספרה"}, timeout=5).json()
    assert (created["barge_in_mode"], created["backchannel_words"]) == ("hold", [])
    url = f"{base}/{created['id']}"
    patched = requests.patch(url, json={"barge_in_mode": "immediate", "backchannel_words": [" יאללה ", "סבבה"]},
                             timeout=5)
    assert patched.status_code == 200, patched.text
    assert requests.get(url, timeout=5).json()["backchannel_words"] == ["יאללה", "סבבה"]
    for bad in ({"barge_in_mode": "sometimes"}, {"backchannel_words": "כן"}, {"backchannel_words": ["..."]},
                {"backchannel_words": ["x" * 41]}, {"backchannel_words": ["כן"] * 51}, {"backchannel_words": [3]}):
        answer = requests.patch(url, json=bad, timeout=5)
        assert answer.status_code == 422 and set(bad) <= set(answer.json().get("fields", {})), (bad, answer.text)
    assert requests.get(url, timeout=5).json()["barge_in_mode"] == "immediate"



def test_the_bench_runs_calls_that_go_on_over_backchannels_and_are_cut_by_words(tmp_path):
    """bench.barge_in_hold under gunicorn: each call's two backchannels are gone on over, its two
    interruptions cut; the figures are written. No timing asserted: the machine's load is not its
    business here."""
    out = tmp_path / "hold.json"
    proc = subprocess.run([sys.executable, "-m", "bench.barge_in_hold", "--calls", "2", "--json", str(out)],
                          cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    figures = json.loads(out.read_text())
    assert figures["errors"] == []
    assert (figures["backchannels"]["went_on"], figures["backchannels"]["cut"]) == (4, 0)
    assert (figures["interruptions"]["went_on"], figures["interruptions"]["cut"]) == (0, 4)
    assert (figures["server"]["holds"], figures["server"]["resumes"], figures["server"]["cuts"]) == (8, 4, 4)
    assert figures["resume_silence_heard_ms"]["n"] == 4
