"""RX's forwarding of the caller's frames around a lost Realtime session: a frame that meets the
closed socket before the Realtime greenlet has seen the loss is held with the others and reaches
the next session in order, never twice, the latest `HELD_FRAMES` of them.

(Over loopback the Realtime greenlet always sees a reset before RX's next write meets it, so the
moment is staged here with a stand-in session; tests/test_realtime_reconnect.py has the whole
call across a reset.)"""
import json

from gevent.event import Event

from services.call_figures import CallFigures
from services.caller_audio import HELD_FRAMES, CallerAudio
from services.realtime_client import RealtimeClosed


class Session:
    """The call's current Realtime connection, as `CallSession._send_realtime` sees it."""

    def __init__(self):
        self.received: list[str] = []
        self.closed = False
        self.fail_after: int | None = None  # close after this many more frames

    def send(self, text: str) -> None:
        if self.fail_after == 0:
            self.closed = True
        if self.closed:
            raise RealtimeClosed("send failed: [Errno 104] Connection reset by peer")
        if self.fail_after is not None:
            self.fail_after -= 1
        self.received.append(json.loads(text)["audio"])


def _setup():
    sessions = [Session()]
    ready = Event()
    figures = CallFigures(stream_started_at=0.0)
    audio = CallerAudio(lambda text: sessions[-1].send(text), ready, figures)
    return sessions, ready, figures, audio


def _frames(first: int, last: int) -> list[str]:
    return [f"frame{n}" for n in range(first, last + 1)]


def test_frames_that_meet_the_closed_session_reach_the_next_one_in_order():
    sessions, ready, figures, audio = _setup()
    ready.set()
    for frame in _frames(1, 5):
        audio.forward(frame)
    sessions[0].closed = True  # the socket dropped; the Realtime greenlet has not seen it yet
    for frame in _frames(6, 8):
        audio.forward(frame)
    ready.clear()  # now it has: it opens a new session
    for frame in _frames(9, 12):
        audio.forward(frame)
    sessions.append(Session())
    ready.set()
    for frame in _frames(13, 14):
        audio.forward(frame)
    assert sessions[0].received == _frames(1, 5)
    assert sessions[1].received == _frames(6, 14)
    assert figures.frames_in == 14 and figures.rx_dropped == {}


def test_a_session_lost_part_way_through_the_held_frames_gets_each_frame_once():
    sessions, ready, figures, audio = _setup()
    for frame in _frames(1, 10):  # held while the first session is configured
        audio.forward(frame)
    sessions[0].fail_after = 4
    ready.set()
    audio.forward("frame11")  # the held ones go first; the session dies after four of them
    ready.clear()
    sessions.append(Session())
    ready.set()
    audio.forward("frame12")
    assert sessions[0].received == _frames(1, 4)
    assert sessions[1].received == _frames(5, 12)
    assert figures.frames_in == 12 and figures.rx_dropped == {}


def test_what_is_held_is_the_latest_frames_within_the_cap():
    sessions, ready, figures, audio = _setup()
    ready.set()
    sessions[0].closed = True
    for frame in _frames(1, HELD_FRAMES + 30):
        audio.forward(frame)
    sessions.append(Session())
    audio.forward(f"frame{HELD_FRAMES + 31}")
    assert sessions[1].received == _frames(32, HELD_FRAMES + 31)
    assert figures.rx_dropped == {"session_not_ready": 31}
