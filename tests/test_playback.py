"""The TX pacer and playback clock, driven on a real clock with a capturing sender."""
import json
import time

import gevent
import pytest

from services.playback import Playback
from services.twilio_protocol import FRAME_BYTES


class Sent:
    def __init__(self):
        self.messages = []

    def __call__(self, texts):
        now = time.monotonic()
        self.messages.extend((now, json.loads(text)) for text in texts)

    def media_times(self):
        return [t for t, m in self.messages if m["event"] == "media"]

    def marks(self):
        return [m["mark"]["name"] for _, m in self.messages if m["event"] == "mark"]


@pytest.fixture
def playback():
    sent = Sent()
    pb = Playback(sent, "MZ1", lead_ms=40)
    tx = gevent.spawn(pb.run)
    yield pb, sent
    pb.stop()
    tx.join(1)


def test_frames_are_paced_at_real_time_after_the_lead(playback):
    pb, sent = playback
    pb.enqueue("r1", "i1", b"\x01" * FRAME_BYTES * 25)  # 500 ms, arriving at once
    pb.end_item("r1", "i1")
    gevent.sleep(0.6)
    times = sent.media_times()
    assert len(times) == 25
    span = times[-1] - times[0]
    # 25 frames over 500 ms of playout, sent up to 40-60 ms ahead of it, in pairs.
    assert 0.38 <= span <= 0.46
    assert sum(pb.lateness_ms) == 25, "every frame's pacing is counted"
    assert sent.marks() == ["item:i1"]


def test_a_partial_last_frame_is_padded_with_silence(playback):
    pb, sent = playback
    pb.enqueue("r1", "i1", b"\x01" * (FRAME_BYTES + 10))
    pb.end_item("r1", "i1")
    gevent.sleep(0.1)
    payloads = [m["media"]["payload"] for _, m in sent.messages if m["event"] == "media"]
    assert len(payloads) == 2
    import base64
    last = base64.b64decode(payloads[1])
    assert last == b"\x01" * 10 + b"\xff" * (FRAME_BYTES - 10)


def test_clear_reports_what_was_heard_not_what_was_sent(playback):
    pb, sent = playback
    pb.enqueue("r1", "i1", b"\x01" * FRAME_BYTES * 100)  # 2 s
    gevent.sleep(0.3)
    assert pb.is_playing()
    heard = pb.clear()
    assert heard.item_id == "i1"
    assert 260 <= heard.heard_ms <= 340
    assert heard.sent_ms >= heard.heard_ms
    gevent.sleep(0.1)
    sent_after = len(sent.media_times())
    gevent.sleep(0.1)
    assert len(sent.media_times()) == sent_after, "nothing is sent after a clear"
    assert not pb.is_playing()
    assert pb.frames_dropped["barge_in"] > 0


def test_audio_of_a_cut_response_arriving_late_is_dropped(playback):
    pb, sent = playback
    pb.enqueue("r1", "i1", b"\x01" * FRAME_BYTES * 50)
    gevent.sleep(0.1)
    pb.clear()
    pb.enqueue("r1", "i1", b"\x01" * FRAME_BYTES * 10)
    pb.enqueue("r2", "i2", b"\x02" * FRAME_BYTES * 5)
    pb.end_item("r2", "i2")
    gevent.sleep(0.2)
    assert pb.frames_dropped["cancelled_response"] == 10
    assert sent.marks()[-1] == "item:i2"
    assert pb.heard_ms("i2") == 100


def test_an_echoed_mark_says_the_item_was_heard_to_its_end(playback):
    pb, sent = playback
    pb.enqueue("r1", "i1", b"\x01" * FRAME_BYTES * 5)
    pb.end_item("r1", "i1")
    pb.enqueue("r2", "i2", b"\x02" * FRAME_BYTES * 50)
    gevent.sleep(0.15)
    pb.on_mark("item:i1")
    assert pb.heard_ms("i1") == 100
    assert pb.playing_item() == "i2"
    heard = pb.clear()
    assert heard.item_id == "i2"
    assert heard.heard_ms <= 60  # re-anchored at i1's end just now


def test_forwarding_is_timed_from_the_first_audio_read_to_its_first_frame_out():
    sent = Sent()
    first_frames = []
    pb = Playback(sent, "MZ1", lead_ms=40, on_first_frame=lambda *args: first_frames.append(args))
    tx = gevent.spawn(pb.run)
    try:
        read_at = time.monotonic() - 0.005  # read off the socket 5 ms before it was queued
        pb.enqueue("r1", "i1", b"\x01" * FRAME_BYTES * 10, received_at=read_at)
        # The stream was idle: its first frames left at once, without waiting for TX to wake.
        assert len(sent.media_times()) == 4  # those heard within the 40 ms lead plus one frame
        pb.enqueue("r1", "i1", b"\x01" * FRAME_BYTES * 10)
        pb.end_item("r1", "i1")
        # A second item queued behind the first waits on purpose: pacing, not forwarding delay.
        pb.enqueue("r2", "i2", b"\x02" * FRAME_BYTES * 5)
        pb.end_item("r2", "i2")
        gevent.sleep(0.6)
    finally:
        pb.stop()
        tx.join(1)
    assert [(item, forwarding is None) for item, _, forwarding in first_frames] == [("i1", False), ("i2", True)]
    item, sent_at, forwarding_ms = first_frames[0]
    assert forwarding_ms == pytest.approx((sent_at - read_at) * 1000)
    assert 5 <= forwarding_ms < 50
    assert sent_at <= sent.media_times()[0] + 0.001


def test_audio_for_a_stream_still_playing_keeps_to_the_schedule(playback):
    pb, sent = playback
    pb.enqueue("r1", "i1", b"\x01" * FRAME_BYTES * 10)  # 200 ms
    pb.end_item("r1", "i1")
    gevent.sleep(0.17)  # every frame of it sent (40 ms lead); the caller is still hearing it
    assert len(sent.media_times()) == 10 and pb.is_playing()
    pb.enqueue("r2", "i2", b"\x02" * FRAME_BYTES * 10)
    pb.end_item("r2", "i2")
    gevent.sleep(0.3)
    times = sent.media_times()
    assert len(times) == 20
    # One timeline: frame k is heard at t0 + k·20 ms and never leaves more than the lead
    # plus one frame before that, however the next item's audio came.
    t0 = times[0]
    assert all(t >= t0 + k * 0.020 - 0.040 - 0.020 - 0.002 for k, t in enumerate(times))
    assert times[-1] - t0 >= 0.380 - 0.060 - 0.002
    assert sent.marks() == ["item:i1", "item:i2"]


class SteppedClock:
    """A clock that stands still until told to move: the schedule is read off it exactly."""

    def __init__(self, start: float):
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("start", [0.0, 0.1, 12345.678901, 1e6 / 3, 98765432.1])
def test_the_schedule_does_not_depend_on_where_the_clock_stands(start):
    clock = SteppedClock(start)
    sent = Sent()
    pb = Playback(sent, "MZ1", lead_ms=40, clock=clock)
    pb.enqueue("r1", "i1", b"\x01" * FRAME_BYTES * 20)  # 400 ms for an idle stream
    counts = [len(sent.media_times())]  # the stretch's start: lead plus one frame, at once
    for k in range(1, 9):  # then every 40 ms, exactly one pair
        clock.now = start + k * 0.040
        pb._send_due()
        counts.append(len(sent.media_times()))
    assert counts == [4, 6, 8, 10, 12, 14, 16, 18, 20]
    pb.stop()
