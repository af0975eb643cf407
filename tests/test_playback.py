"""The TX pacer and the playback clock, on a manual clock.

TX runs in its own greenlet, as in a call, but reads the test's clock and sleeps on it: every
frame's send time is exact, and nothing depends on the machine's speed or on where its
monotonic clock stands. With a 40 ms lead, frame n of a stretch is heard at n·20 ms and may
leave from n·20 − 60 ms (lead, and one frame earlier still: frames go in pairs).
"""
import base64
import json

import gevent
import pytest

from services.playback import Playback
from services.twilio_protocol import FRAME_BYTES
from tests.manual_clock import ManualClock

# Where a machine's monotonic clock may stand; float rounding of a difference of two readings
# changes across these (e.g. [128, 256), [4096, 8192), [65536, 131072) seconds).
ORIGINS = [0.0, 128.3, 4096.7, 65536.1, 1e7]


def frames(n: int, byte: int = 0x01) -> bytes:
    return bytes([byte]) * FRAME_BYTES * n


def pairs_from(first: int, last: int, start_ms: float = 0.0) -> list[float]:
    """When frames first..last of a stretch begun at `start_ms` leave, TX waking on time:
    frame n in the pair due at (n − 2) // 2 · 40 ms."""
    return [start_ms + (n - 2) // 2 * 40 for n in range(first, last + 1)]


class Sent:
    """The socket: each message Playback writes, with the clock's reading (ms since its origin).
    A write can take `write_ms` of the writer's time."""

    def __init__(self, clock: ManualClock, write_ms: float = 0.0):
        self.clock = clock
        self.write_ms = write_ms
        self.messages: list[tuple[float, dict]] = []

    def __call__(self, texts: list[str]) -> None:
        at = self.clock.elapsed_ms
        self.messages.extend((at, json.loads(text)) for text in texts)
        self.clock.spend_ms(self.write_ms)

    def media_at(self) -> list[float]:
        return [t for t, m in self.messages if m["event"] == "media"]

    def media_bytes(self) -> list[int]:
        """The first byte of each frame sent: which response it came from."""
        return [base64.b64decode(m["media"]["payload"])[0] for _, m in self.messages if m["event"] == "media"]

    def marks(self) -> list[tuple[float, str]]:
        return [(t, m["mark"]["name"]) for t, m in self.messages if m["event"] == "mark"]


@pytest.fixture
def tx():
    """start(origin, write_ms=0, **playback_args) → (Playback, Sent, ManualClock), TX running."""
    greenlets = []

    def start(origin: float = 0.0, write_ms: float = 0.0, **kwargs):
        clock = ManualClock(origin)
        sent = Sent(clock, write_ms)
        pb = Playback(sent, "MZ1", lead_ms=40, clock=clock, sleep=clock.sleep, **kwargs)
        greenlets.append(gevent.spawn(pb.run))
        clock.settle()
        return pb, sent, clock

    yield start
    for greenlet in greenlets:
        assert not greenlet.dead, f"TX died: {greenlet.exception!r}"
    gevent.killall(greenlets)  # TX may be asleep on a clock that no longer moves


@pytest.mark.parametrize("origin", ORIGINS)
def test_a_stretch_opens_with_the_lead_at_once_then_a_pair_every_40_ms(tx, origin):
    pb, sent, clock = tx(origin)
    pb.enqueue("r1", "i1", frames(25))  # 500 ms, arriving at once for an idle stream
    pb.end_item("r1", "i1")
    # Frames 0-3 (the 40 ms lead and one frame more) leave from enqueue, before TX runs.
    assert sent.media_at() == [0.0] * 4
    clock.advance_ms(600)
    assert sent.media_at() == [0.0] * 4 + pairs_from(4, 24)
    assert sent.marks() == [(440.0, "item:i1")], "the mark follows the item's last frame"
    assert pb.lateness_ms[0] == 25, "every frame left on time"
    assert pb.frames_out == 25


def test_a_partial_last_frame_is_padded_with_silence(tx):
    pb, sent, clock = tx()
    pb.enqueue("r1", "i1", b"\x01" * (FRAME_BYTES + 10))
    pb.end_item("r1", "i1")
    clock.settle()
    payloads = [base64.b64decode(m["media"]["payload"]) for _, m in sent.messages if m["event"] == "media"]
    assert payloads == [b"\x01" * FRAME_BYTES, b"\x01" * 10 + b"\xff" * (FRAME_BYTES - 10)]
    assert [m["event"] for _, m in sent.messages] == ["media", "media", "mark"]


@pytest.mark.parametrize("origin", ORIGINS)
def test_what_was_heard_is_counted_in_whole_frames_wherever_the_clock_stands(tx, origin):
    pb, _, clock = tx(origin)
    pb.enqueue("r1", "i1", frames(50))
    heard = []
    for _ in range(49):
        clock.advance_ms(20)
        heard.append(pb.heard_ms("i1"))
    assert heard == [20 * k for k in range(1, 50)], "at each frame's end, exactly that frame more"


@pytest.mark.parametrize("origin", ORIGINS)
def test_clear_mid_stretch_reports_what_was_heard_not_what_was_sent(tx, origin):
    pb, sent, clock = tx(origin)
    pb.enqueue("r1", "i1", frames(100))  # 2 s
    clock.advance_ms(310)
    assert pb.is_playing() and pb.playing_item() == "i1"
    heard = pb.clear()
    assert (heard.item_id, heard.response_id) == ("i1", "r1")
    assert heard.heard_ms == 300, "15 whole frames played by 310 ms"
    assert heard.sent_ms == 18 * 20, "frames 0-17 had left (the pair at 280 ms)"
    assert pb.frames_dropped == {"barge_in": 82}
    clock.advance_ms(500)
    assert len(sent.media_at()) == 18, "nothing is sent after a clear"
    assert not pb.is_playing() and pb.playing_item() is None


def test_audio_of_a_cut_response_arriving_late_is_dropped(tx):
    pb, sent, clock = tx()
    pb.enqueue("r1", "i1", frames(50, 0x01))
    clock.advance_ms(100)
    pb.clear()
    cleared_at = len(sent.messages)
    pb.enqueue("r1", "i1", frames(10, 0x01))  # the cut response's audio still coming in
    pb.end_item("r1", "i1")
    pb.enqueue("r2", "i2", frames(5, 0x02))  # the next answer: a new stretch at once
    pb.end_item("r2", "i2")
    clock.advance_ms(200)
    assert pb.frames_dropped["cancelled_response"] == 10
    after = [m for _, m in sent.messages[cleared_at:]]
    assert {base64.b64decode(m["media"]["payload"])[0] for m in after if m["event"] == "media"} == {0x02}
    # TX wakes at 120 ms as it meant to before the clear; frame 4 of the new stretch may leave then.
    assert sent.media_at()[-5:] == [100.0] * 4 + [120.0]
    assert sent.marks() == [(120.0, "item:i2")], "no mark for the cut item"
    assert pb.heard_ms("i2") == 100 and pb.unheard_items("r1") == []


@pytest.mark.parametrize("origin", ORIGINS)
def test_audio_after_the_stream_ran_dry_opens_a_new_stretch(tx, origin):
    pb, sent, clock = tx(origin)
    pb.enqueue("r1", "i1", frames(5))  # 100 ms, more of the same item to come
    clock.advance_ms(100)  # the caller has heard it all: the stream is dry from here
    assert not pb.is_playing() and pb.heard_ms("i1") == 100
    pb.enqueue("r1", "i1", frames(5))
    # A new stretch: its lead leaves at once again, not on the old schedule (which would hold
    # frame 5 back for nothing, or send it late as if the caller had heard silence as audio).
    assert sent.media_at() == [0.0] * 4 + [40.0] + [100.0] * 4
    clock.advance_ms(60)
    assert sent.media_at()[-1] == 140.0
    assert pb.heard_ms("i1") == 160, "100 ms before the gap, then 3 frames of the new stretch"
    clock.advance_ms(100)
    assert pb.heard_ms("i1") == 200 and not pb.is_playing()
    assert pb.lateness_ms[0] == 10


@pytest.mark.parametrize("origin", ORIGINS)
def test_audio_for_a_stream_still_playing_keeps_to_the_schedule(tx, origin):
    pb, sent, clock = tx(origin)
    pb.enqueue("r1", "i1", frames(5))  # heard until 100 ms
    pb.end_item("r1", "i1")
    clock.advance_ms(99.999)  # one microsecond before the stream runs dry
    pb.enqueue("r2", "i2", frames(5))
    pb.end_item("r2", "i2")
    # The same stretch: frames 5-7 are due (from 40 ms, 60 ms, 80 ms), 8-9 wait for TX at 120 ms.
    assert sent.media_at() == [0.0] * 4 + [40.0] + [99.999] * 3
    clock.advance_ms(200)
    assert sent.media_at()[-2:] == [120.0, 120.0]
    assert [name for _, name in sent.marks()] == ["item:i1", "item:i2"]
    assert pb.heard_ms("i2") == 100


@pytest.mark.parametrize("origin", ORIGINS)
def test_a_late_mark_corrects_what_was_heard_and_leaves_the_schedule_alone(tx, origin):
    pb, sent, clock = tx(origin)
    pb.enqueue("r1", "i1", frames(5))  # heard, by our clock, until 100 ms
    pb.end_item("r1", "i1")
    pb.enqueue("r2", "i2", frames(50))
    clock.advance_ms(150)
    # Twilio played it 50 ms later than we counted: its mark comes back only now.
    assert pb.on_mark("item:i1") == "i1"
    assert pb.heard_ms("i1") == 100 and pb.unheard_items("r1") == []
    assert pb.playing_item() == "i2"
    clock.advance_ms(60)
    assert pb.heard_ms("i2") == 60, "heard from the mark on, not the 100 ms our clock would say"
    heard = pb.clear()
    assert (heard.item_id, heard.heard_ms) == ("i2", 60)
    assert sent.media_at() == [0.0] * 4 + pairs_from(4, 13), "the schedule kept to its own start"


def test_a_mark_of_an_unknown_or_cleared_item_changes_nothing(tx):
    pb, _, clock = tx()
    pb.enqueue("r1", "i1", frames(10))
    pb.end_item("r1", "i1")
    clock.advance_ms(100)
    assert pb.on_mark("item:nope") is None and pb.on_mark("other") is None
    assert pb.heard_ms("i1") == 100
    pb.clear()
    assert pb.on_mark("item:i1") is None, "echoed after the clear: means nothing now"


def test_a_stalled_loop_sends_what_fell_due_at_once_and_counts_how_late(tx):
    pb, sent, clock = tx()
    pb.enqueue("r1", "i1", frames(25))
    pb.end_item("r1", "i1")
    clock.advance_ms(40)  # frames 0-5 out: the caller has audio until 120 ms
    clock.stall_ms(50)  # TX was due at 80 ms and runs at 90 ms
    assert sent.media_at()[6:] == [90.0] * 2, "frames 6-7, those due by 90 ms"
    clock.advance_ms(500)
    assert sent.media_at()[8:] == pairs_from(8, 24), "back on the one schedule"
    late = {ms: n for ms, n in enumerate(pb.lateness_ms) if n}
    assert late == {0: 24, 10: 1}, "frame 6 was due to leave at 80 ms"
    assert pb.heard_ms("i1") == 500


def test_a_stall_longer_than_the_audio_sent_ahead_lets_the_caller_run_dry(tx):
    pb, sent, clock = tx()
    pb.enqueue("r1", "i1", frames(25))
    pb.end_item("r1", "i1")
    clock.advance_ms(40)  # frames 0-5 out: the caller has audio until 120 ms
    clock.stall_ms(100)  # TX runs at 140 ms: the caller heard 20 ms of silence
    assert pb.heard_ms("i1") == 120
    # The rest is a new stretch from 140 ms: its lead at once, then pairs.
    assert sent.media_at()[6:] == [140.0] * 4
    clock.advance_ms(20)
    assert pb.heard_ms("i1") == 140, "one frame of the new stretch, after the 6 of the old"
    clock.advance_ms(500)
    assert sent.media_at()[10:] == pairs_from(4, 18, start_ms=140.0)
    assert pb.heard_ms("i1") == 500 and not pb.is_playing()


def test_a_slow_socket_write_does_not_push_the_schedule_back(tx):
    pb, sent, clock = tx(write_ms=3)  # every write takes 3 ms
    pb.enqueue("r1", "i1", frames(25))
    pb.end_item("r1", "i1")
    clock.advance_ms(600)
    assert sent.media_at() == [0.0] * 4 + pairs_from(4, 24), "TX sleeps what is left after its write"
    assert pb.lateness_ms[0] == 25


@pytest.mark.parametrize("origin", ORIGINS)
def test_forwarding_is_timed_from_the_first_audio_read_to_its_first_frame_out(tx, origin):
    first_frames = []
    pb, sent, clock = tx(origin, write_ms=1, on_first_frame=lambda *args: first_frames.append(args))
    read_at = clock()
    clock.spend_ms(5)  # read off the socket 5 ms before it was parsed and queued
    pb.enqueue("r1", "i1", frames(10), received_at=read_at)
    # The stream was idle: its first frames left at once, without waiting for TX to wake.
    counts = [len(sent.media_at())]
    pb.enqueue("r1", "i1", frames(10))
    pb.end_item("r1", "i1")
    # A second item queued behind the first waits on purpose: pacing, not forwarding delay.
    pb.enqueue("r2", "i2", frames(5))
    pb.end_item("r2", "i2")
    counts.append(len(sent.media_at()))
    for _ in range(13):
        clock.advance_ms(40)
        counts.append(len(sent.media_at()))
    # The same counts at every origin: the lead and one frame, then a pair per 40 ms.
    assert counts == [4, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 25, 25, 25]
    assert [(item, forwarding is None) for item, _, forwarding in first_frames] == [("i1", False), ("i2", True)]
    item, sent_at, forwarding_ms = first_frames[0]
    assert sent_at - origin == pytest.approx(0.006, abs=1e-6), "timed when its write returned"
    assert forwarding_ms == pytest.approx(6.0, abs=1e-3), "5 ms to queue it, 1 ms to write it"
